"""The musetalk engine against the reference code's own outputs, without the weights.

Every weight is set by the compatibility data's fill rule (tests/musetalk_fill.py) and
written in the published folder layout; the goldens in tests/data/musetalk/ are what the
reference MuseTalk 1.5 code computed with the same weights. Within the tolerances the data
state (1e-4 on floats, one level on at most 0.1 % of uint8 values) our code computes the
same functions: audio features and prompts, VAE latents and decoding, the UNet step (the
tiny UNet always, the full-size one once), and the face box rule. Then the weight files:
every way a download can be wrong fails with one CheckpointError naming the file. Then a
render through the engine.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from lipsync.engines.musetalk import audio as mt_audio
from lipsync.engines.musetalk import model as mm
from lipsync.engines.musetalk.face import crop, landmark_box
from lipsync.engines.musetalk.model import MuseTalk
from lipsync.errors import CheckpointError
from lipsync.media.audio import load_mono
from tests import fake_hub
from tests.fake_hub import FakeHub, fetch_module
from tests.musetalk_fill import DATA, close, config, golden, manifest, state, write_published_folder

pytestmark = pytest.mark.xdist_group("musetalk")


@pytest.fixture(scope="module")
def models_folder(tmp_path_factory):
    return write_published_folder(tmp_path_factory.mktemp("musetalk") / "models")


@pytest.fixture(scope="module")
def net(models_folder) -> MuseTalk:
    return MuseTalk.load(models_folder)


def images_close(a: np.ndarray, b: np.ndarray) -> None:
    d = np.abs(a.astype(int) - b.astype(int))
    assert d.max() <= 1 and (d > 0).mean() <= 0.001, (d.max(), (d > 0).mean())


# --------------------------------------------------------------------------- goldens


def test_audio_features_and_prompts_match_the_reference(net):
    g = golden("audio_golden.npz")
    wav = load_mono(DATA / "test_audio.wav", rate=16000)
    close(net.audio.log_mel(wav), g["input_features"])
    states = net.audio.hidden_states(wav)
    assert len(states) == int(g["num_whisper_frames_kept"])
    close(states, g["hidden_states"])
    for fps in (25, 30):
        prompts = net.audio.prompts(wav, fps)
        assert len(prompts) == int(g[f"prompts{fps}_frames"])
        close(prompts[g[f"prompts{fps}_rows"]], g[f"prompts{fps}_pe"])
    close(net.audio.pe, g["pe_table"], tol=0)


@pytest.mark.parametrize("samples, fps, frames", [(18560, 25, 28), (65600, 30, 122), (24000, 29.97, 43)])
def test_frame_counts_follow_the_references_float64_arithmetic(samples, fps, frames):
    assert mt_audio.video_frames(samples, fps) == frames
    assert mt_audio.kept_whisper_frames(9280) == 28


def test_vae_latents_and_decoding_match_the_reference(net):
    g = golden("vae_golden.npz")
    face = g["face_bgr"][None]
    close(net.latents(face), g["latents_mode"])  # what the engine uses: the posterior mean
    close(net.latents(face, noise=torch.from_numpy(g["eps"])), g["latents"])  # the reference's draw
    images_close(net.decode(torch.from_numpy(g["decode_input"])), g["decoded_bgr"])


def test_the_tiny_unet_step_matches_the_reference(net):
    g = golden("unet_golden.npz")
    close(net.generate(torch.from_numpy(g["latent"]), torch.from_numpy(g["audio_prompt_pe"])), g["tiny_output"])


def test_face_boxes_follow_the_v15_rule_exactly():
    g = golden("pipeline_golden.npz")
    for i in range(2):
        assert landmark_box(g["landmarks68"][i], 512) == tuple(g["crop_box"][i])
    for name, points, detector, expected in zip(g["case_names"], g["case_landmarks68"], g["case_detector_box"],
                                                g["case_crop_box"]):
        got = landmark_box(points, 512, tuple(int(v) for v in detector))
        assert got == (None if expected[0] < 0 else tuple(int(v) for v in expected)), name


def test_the_crop_is_the_references_within_a_resampler_tolerance():
    g = golden("pipeline_golden.npz")
    for i in range(2):
        ours = crop(g["frames_bgr"][i], tuple(int(v) for v in g["crop_box"][i]))
        d = np.abs(ours.astype(int) - g["crop256_bgr"][i].astype(int))
        # Pillow's Lanczos (3 lobes) against OpenCV's Lanczos4: the network sees the same face
        assert d.mean() < 1.0 and d.max() <= 8, (d.mean(), d.max())


@pytest.mark.slow
def test_the_full_size_unet_matches_the_reference_once():
    """850 M parameters (3.4 GB in float32): the published UNet's size, filled by the rule."""
    doc = manifest("unet_manifest.json")
    unet = mm.build_unet(config(doc))
    unet.load_state_dict(state(doc), strict=True)
    unet.eval().requires_grad_(False)
    g = golden("unet_golden.npz")
    with torch.no_grad():
        out = unet(torch.from_numpy(g["latent"]), torch.zeros(1),
                   encoder_hidden_states=torch.from_numpy(g["audio_prompt_pe"])).sample
    close(out, g["output"])
    # and the per-frame path of inference.py: reference latents + audio -> UNet -> decoded faces
    p = golden("pipeline_golden.npz")
    with torch.no_grad():
        faces = unet(torch.from_numpy(p["latents"]), torch.zeros(1),
                     encoder_hidden_states=torch.from_numpy(p["audio_prompts_pe"])).sample
    close(faces, p["unet_out"])
    del unet
    vae_doc = manifest("vae_manifest.json")
    vae = mm.build_vae(config(vae_doc))
    vae.load_state_dict(state(vae_doc))
    net = MuseTalk(unet=torch.nn.Identity(), vae=vae.eval(), audio=None, device=torch.device("cpu"),
                   dtype=torch.float32)
    images_close(net.decode(torch.from_numpy(p["unet_out"])), p["decoded_bgr"])
    close(net.latents(p["crop256_bgr"], noise=torch.from_numpy(p["eps"])), p["latents"])


# --------------------------------------------------------------------------- the weight files


def test_the_published_layout_loads_with_either_vae_spelling(models_folder, tmp_path, net):
    other = write_published_folder(tmp_path / "models", vae_format="safetensors")
    shutil.rmtree(other / "musetalkV15")
    shutil.copytree(models_folder / "musetalkV15", other / "musetalkV15")
    again = MuseTalk.load(other)
    g = golden("vae_golden.npz")
    close(again.latents(g["face_bgr"][None]), net.latents(g["face_bgr"][None]), tol=0)


@pytest.mark.parametrize("damage", ["missing", "truncated", "wrong_shape", "malicious", "not_a_model"])
def test_a_bad_weight_file_fails_with_one_error_naming_it(models_folder, tmp_path, damage):
    folder = tmp_path / "models"
    shutil.copytree(models_folder, folder)
    unet = folder / "musetalkV15" / "unet.pth"
    if damage == "missing":
        unet.unlink()
        expected = "missing"
    elif damage == "truncated":
        data = unet.read_bytes()
        unet.write_bytes(data[: len(data) // 3])
        expected = "truncated or corrupt"
    elif damage == "wrong_shape":
        doc = manifest("unet_manifest.json")  # the full-size config for the tiny weights
        (folder / "musetalkV15" / "musetalk.json").write_text(__import__("json").dumps(doc["config"]))
        expected = "mismatched"
    elif damage == "malicious":
        marker = tmp_path / "pwned"

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))
        torch.save({"conv_in.weight": Evil()}, unet)
        expected = "refused to load"
    else:
        torch.save({"optimizer": {"lr": 1e-4}, "step": 5}, unet)
        expected = "not a model state_dict"
    with pytest.raises(CheckpointError) as err:
        MuseTalk.load(folder)
    missing_path = str(folder / "musetalkV15" / "unet.pth")
    assert missing_path in str(err.value) and expected in str(err.value), str(err.value)
    if damage == "malicious":
        assert not (tmp_path / "pwned").exists()  # no code ran


def test_an_edited_config_is_blamed_not_the_good_weights(models_folder, tmp_path):
    """A config that departs from the published one names itself and the value that differs;
    the multi-GB weights it disagrees with are not to be downloaded again."""
    import json

    folder = tmp_path / "models"
    shutil.copytree(models_folder, folder)
    # the weights here are the tiny ones: published sizes, but for block_out_channels, which
    # the tiny test config sets; an edited in_channels is what the test adds
    config_file = folder / "musetalkV15" / "musetalk.json"
    config = json.loads(config_file.read_text())
    config["in_channels"] = 4
    config_file.write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        MuseTalk.load(folder)
    message = str(err.value)
    assert message.startswith(str(config_file)) and "in_channels: 4 (published: 8)" in message, message
    assert "conv_in.weight" in message and "need no new download" in message


def test_a_missing_whisper_folder_names_the_file_the_download_brings(models_folder, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(models_folder, folder)
    shutil.rmtree(folder / "whisper")
    with pytest.raises(CheckpointError) as err:
        MuseTalk.load(folder)
    assert str(err.value).startswith(str(folder / "whisper" / "pytorch_model.bin"))
    assert "or model.safetensors" in str(err.value) and "scripts/fetch-models musetalk" in str(err.value)


def test_long_messages_are_shortened_at_a_word_boundary():
    from lipsync.errors import shorten

    detail = ("Weights only load failed. This file can still be loaded, to do so you have two options, do those "
              "steps only if you trust the source of the checkpoint. (1) In PyTorch 2.6, we changed the default "
              "value of the weights_only argument (your checkpoint file is) fine")
    short = shorten(detail, 200)
    assert len(short) <= 200 and short.endswith("…") and short.count("(") == short.count(")")
    assert detail.startswith(short[:-1]) and detail[len(short) - 1] == " "  # cut between words
    assert shorten("short enough", 200) == "short enough"



# --------------------------------------------------------------------------- the engine


def test_a_render_repaints_the_lower_face_and_leaves_the_rest(models_folder, tmp_path):
    from lipsync.engines import create_engine
    from lipsync.engine import RenderOptions
    from lipsync.render import render
    from tests.media_factory import probe, write_still, write_wav

    # a photo (its face is encoded once for the whole video) and 0.32 s of the test audio:
    # the VAE at 256x256 costs seconds per face on a CPU
    template = write_still(tmp_path / "face.png", size=(256, 256))
    speech = write_wav(tmp_path / "speech.wav", (load_mono(DATA / "test_audio.wav", rate=16000)[:5120] * 32767)
                       .astype(np.int16), 16000)
    out = tmp_path / "out.mp4"
    engine = create_engine("auto", musetalk_models=models_folder, device="cpu", musetalk_batch_size=4)
    assert engine.name == "musetalk"
    assert [n.split(" ")[0] for n in engine.load_notes] == ["latentsync"]  # first in auto's order, not configured
    render(speech, template, out, engine=engine, options=RenderOptions(device="cpu", crf=12, still_fps=25,
                                                                       cache_dir=tmp_path / "cache"))
    assert probe(out)["frames"] == 8  # 0.32 s at 25 fps
    import av
    from PIL import Image

    src = np.asarray(Image.open(template).convert("RGB")).astype(int)
    with av.open(str(out)) as o:
        got = [f.to_ndarray(format="rgb24").astype(int) for f in o.decode(video=0)]
    changed = np.abs(got[4] - src).mean(axis=2)
    # the synthetic weights paint coloured noise: plainly changed below the nose, the top untouched
    assert changed[150:210, 100:160].mean() > 15, changed[150:210, 100:160].mean()
    assert changed[:60].mean() < 3


def test_auto_falls_back_in_order_and_says_why(tmp_path):
    from lipsync.engines import create_engine

    engine = create_engine("auto", device="cpu")
    assert engine.name == "warp"
    assert [n.split(" ")[0] for n in engine.load_notes] == ["latentsync", "musetalk", "wav2lip"]
    assert "render.latentsync.models" in engine.load_notes[0] and "render.musetalk.models" in engine.load_notes[1]


# --------------------------------------------------------------------------- scripts/fetch-models musetalk


FETCH_FILES = fetch_module().MUSETALK_FILES


def run_fetch(*args):
    return fake_hub.run_fetch("musetalk", *args)


def test_fetch_models_musetalk_downloads_checks_and_loads(models_folder, tmp_path):
    hub = FakeHub(models_folder, FETCH_FILES)
    try:
        r = run_fetch("--dir", str(tmp_path / "m"), "--base-url", hub.url)
    finally:
        hub.httpd.shutdown()
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str((tmp_path / "m").resolve())
    for _repo, _rev, _path, dest in FETCH_FILES:
        assert (tmp_path / "m" / dest).read_bytes() == (models_folder / dest).read_bytes()
    assert 'render.musetalk] models = "' in r.stderr


def test_fetch_models_musetalk_refuses_a_file_that_differs_from_the_hubs_record(models_folder, tmp_path):
    hub = FakeHub(models_folder, FETCH_FILES, tamper="pytorch_model.bin")
    try:
        r = run_fetch("--dir", str(tmp_path / "m"), "--base-url", hub.url)
    finally:
        hub.httpd.shutdown()
    assert r.returncode == 1 and "SHA-256 mismatch" in r.stderr
    assert not (tmp_path / "m" / "whisper" / "pytorch_model.bin").exists()
    assert not list((tmp_path / "m").rglob("*.part"))
