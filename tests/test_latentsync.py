"""The latentsync engine against the reference code's own outputs, without the weights.

Every weight is set by the fill rule (tests/latentsync_fill.py) and written in the
published layout; the goldens in tests/data/latentsync/ are what the reference
LatentSync code computed with the same weights (how: tests/data/latentsync/README.md).
Within stated tolerances our code computes the same functions: the audio tokens, one
UNet step (the tiny configuration always, the full-size one once), a window's DDIM steps
with guidance and its VAE decode, and the alignment and paste-back geometry on a real
face. Then the weight files: every way a download can be wrong fails with one
CheckpointError naming the file. Then renders through the engine.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from lipsync.engines.latentsync.align import Aligner, keep_mask, three_points
from lipsync.engines.latentsync.audio import AudioTokens
from lipsync.engines.latentsync.model import LatentSync, to_images
from lipsync.engines.latentsync.unet import UNet3D, UNetConfig, position_table
from lipsync.errors import CheckpointError
from lipsync.media.audio import load_mono
from tests.latentsync_fill import (
    fill_in_place,
    golden,
    long_audio,
    manifest,
    tiny_config,
    unet_state,
    write_models_folder,
)
from tests.musetalk_fill import DATA as MUSETALK_DATA
from tests.musetalk_fill import close, input_value

pytestmark = pytest.mark.xdist_group("latentsync")


@pytest.fixture(scope="module")
def models_folder(tmp_path_factory):
    return write_models_folder(tmp_path_factory.mktemp("latentsync") / "models")


@pytest.fixture(scope="module")
def quick_folder(tmp_path_factory):
    """The tiny UNet with a narrow VAE: for the engine's own tests, where the published VAE
    would spend a second per face."""
    return write_models_folder(tmp_path_factory.mktemp("latentsync") / "quick", vae="tiny")


@pytest.fixture(scope="module")
def net(models_folder) -> LatentSync:
    return LatentSync.load(models_folder)


# --------------------------------------------------------------------------- goldens


def test_audio_tokens_match_the_reference(net):
    g = golden("audio_golden.npz")
    short = load_mono(MUSETALK_DATA / "test_audio.wav", rate=16000)
    long = long_audio().astype(np.float32) / 32768.0
    for tag, wav in (("a", short), ("b", long)):
        tokens = AudioTokens(net.encoder, wav)
        assert tokens.mel_frames == int(g[f"{tag}_mel_frames"]) and tokens.length == int(g[f"{tag}_features_len"])
        for fps in (25, 30):
            close(tokens.tokens([int(r) for r in g[f"{tag}_chunks{fps}_rows"]], fps), g[f"{tag}_chunks{fps}"])
    tokens = AudioTokens(net.encoder, short)
    close(tokens.features(list(range(tokens.length))), g["a_features"])
    # across the 30-s boundary: the second segment is encoded on its own, as the reference does
    close(AudioTokens(net.encoder, long).features(list(range(1490, 1510))),
          g["b_features_1490_1510"])


def _unet_step(unet: UNet3D, tag: str) -> tuple[torch.Tensor, np.ndarray]:
    """(ours, the reference's) output of the goldens' UNet call for ``tag`` ("tiny", "full")."""
    g = golden(f"unet_{tag}_golden.npz")
    shape = tuple(int(v) for v in g[f"{tag}_shape"])
    with torch.no_grad():
        out = unet.eval()(torch.from_numpy(input_value(2001, shape)), torch.tensor(int(g[f"{tag}_timestep"])),
                          torch.from_numpy(input_value(2002, (2 * shape[2], 50, 384))))
    return out, g[f"{tag}_output"]


def test_the_tiny_unet_step_matches_the_reference():
    doc = manifest("unet_tiny_manifest.json")
    unet = UNet3D(UNetConfig.of(doc["config"]))
    unet.load_state_dict(unet_state(doc), strict=True)
    close(*_unet_step(unet, "tiny"))
    g = golden("unet_tiny_golden.npz")
    close(position_table(24, 32), g["pe_table"][None], tol=0)  # the temporal layers' table, as the reference's


@pytest.mark.slow
def test_the_full_size_unet_matches_the_reference_once():
    """1.27 G parameters (5.1 GB in float32): the published UNet's size, filled by the rule."""
    doc = manifest("unet_full_manifest.json")
    unet = UNet3D(UNetConfig.of(doc["config"]))
    fill_in_place(unet, doc)
    close(*_unet_step(unet, "full"))


def test_a_window_of_ddim_steps_with_guidance_and_the_decode_match_the_reference(net):
    """The tiny UNet, the real VAE: conditions, each DDIM step, the decode, the composite."""
    g = golden("pipeline_golden.npz")
    generator = torch.Generator().manual_seed(int(g["seed"]))
    frames = len(g["faces_rgb"])
    noise = net.initial_noise(generator).repeat(1, 1, frames, 1, 1)
    close(noise, g["init_latents"], tol=0)
    keep = g["mask_image"][0]  # the reference's own mask: the neural path alone (the resize is tested apart)
    conditions, pixels = net.conditions(g["faces_rgb"], keep, generator)
    close(pixels, g["ref_pixel_values"], tol=0)
    for got, name in zip(conditions, ("mask_latents", "masked_image_latents", "ref_latents")):
        close(got, g[name])
    trail = []
    latents = net.denoise(noise, conditions, torch.from_numpy(g["audio_embeds"]), steps=int(g["steps"]),
                          guidance=float(g["guidance_scale"]), generator=generator, trail=trail)
    close(torch.stack(trail), g["latents_per_step"])
    decoded = net.decode(latents)
    close(decoded, g["decoded"])
    keep_t = torch.from_numpy(keep)
    images = to_images(decoded * (1 - keep_t) + pixels * keep_t)
    d = np.abs(images.astype(int) - g["images"].astype(int))
    assert d.max() <= 1 and (d > 0).mean() <= 0.001, (d.max(), (d > 0).mean())


def test_alignment_and_mask_match_the_reference_on_a_real_face(astronaut_landmarks):
    from skimage import data

    g = golden("align_golden.npz")
    frame0 = data.astronaut()
    assert np.array_equal(three_points(astronaut_landmarks), g["landmarks3"][0])
    for res in (512, 128):
        aligner = Aligner(res)
        assert aligner.face_size == tuple(int(v) for v in g[f"face_size_{res}"])
        matrices = aligner.matrices(list(g["landmarks3"]))  # frame 1 is smoothed against frame 0
        close(np.stack(matrices), g[f"matrix_{res}"], tol=5e-4)
        face = aligner.warp(frame0, matrices[0])
        d = np.abs(face.astype(int) - g[f"aligned_{res}"][0].astype(int))
        assert d.max() <= 1 and (d > 0).mean() < 0.001, (d.max(), (d > 0).mean())
        # Pillow's Lanczos (3 lobes) against OpenCV's Lanczos4
        d = np.abs(aligner.square(face).astype(int) - g[f"crop_{res}"][0].astype(int))
        assert d.mean() < 0.5 and d.max() <= 8, (d.mean(), d.max())
        ours, ref = keep_mask(res), g[f"mask_{res}"]
        assert np.abs(ours - ref).mean() < 0.005 and np.abs(ours - ref).max() < 0.25
        side = res // 8  # what the network sees of the mask: nearest samples on the latent grid
        assert np.array_equal(ours[::8, ::8][:side, :side] > 0.5, ref[::8, ::8][:side, :side] > 0.5)


def test_paste_back_repaints_the_mouth_region_and_nothing_else(astronaut_landmarks):
    from scipy.ndimage import binary_erosion
    from skimage import data

    g = golden("align_golden.npz")
    frame0 = data.astronaut()
    aligner = Aligner(512)
    matrix = aligner.matrices([g["landmarks3"][0]])[0]
    crop = torch.from_numpy(g["crop_512"][0]).permute(2, 0, 1).float()
    painted = torch.from_numpy(g["mask_512"])[None] < 0.5
    generated = torch.where(painted, 255 - crop, crop) / 127.5 - 1  # the mouth region's colours inverted
    out = aligner.paste(frame0, generated, matrix)
    changed = np.any(out != frame0, axis=-1)
    # the region: cheeks beside the nose, mouth, jaw and chin -- nothing up to the eyes, nothing beside the face
    ys, xs = np.nonzero(changed)
    p = astronaut_landmarks
    assert 2000 < changed.sum() < 20000
    assert ys.min() > p[36:48, 1].max() and xs.min() > p[0, 0] - 25 and xs.max() < p[16, 0] + 25
    # exactly: every changed pixel lies where the reference's mask, carried into the frame, paints
    from lipsync.engines.latentsync.align import invert, warp_affine

    w, h = aligner.face_size
    region = torch.nn.functional.interpolate(painted[None].float(), size=(h, w), mode="nearest")
    region = warp_affine(region, invert(matrix), frame0.shape[:2], fill=0.0)[0, 0].numpy() > 0
    from scipy.ndimage import binary_dilation

    assert not (changed & ~binary_dilation(region)).any()  # a pixel's leeway for the two resamplers
    # inside it, the reference's restore puts the same pixels there (bicubic + bilinear geometry)
    core = binary_erosion(changed, iterations=6)
    d = np.abs(out.astype(int) - g["restored_frame0"].astype(int))[core]
    assert core.sum() > 2000 and d.mean() < 1.5 and np.percentile(d, 99) <= 8, (d.mean(), np.percentile(d, 99))


# --------------------------------------------------------------------------- the weight files


def test_the_published_layout_loads_and_names_every_part(models_folder, net):
    assert net.resolution == 128 and net.unet.config.block_out_channels == (32, 64, 128, 128)
    loaded = {k: v for k, v in net.unet.state_dict().items()}
    file = torch.load(models_folder / "latentsync_unet.pt", weights_only=True)["state_dict"]
    assert loaded.keys() == file.keys() and all(torch.equal(loaded[k], file[k]) for k in file)


def test_a_file_without_the_position_tables_still_loads(models_folder, tmp_path, net):
    folder = tmp_path / "models"
    import shutil

    shutil.copytree(models_folder, folder)
    state = torch.load(folder / "latentsync_unet.pt", weights_only=True)["state_dict"]
    torch.save({k: v for k, v in state.items() if not k.endswith("pos_encoder.pe")}, folder / "latentsync_unet.pt")
    again = LatentSync.load(folder)
    assert all(torch.equal(a, b) for a, b in zip(again.unet.state_dict().values(), net.unet.state_dict().values()))


@pytest.mark.parametrize("damage", ["missing", "truncated", "wrong_shape", "malicious", "not_whisper", "config"])
def test_a_bad_weight_file_fails_with_one_error_naming_it(models_folder, tmp_path, damage):
    import shutil

    folder = tmp_path / "models"
    shutil.copytree(models_folder, folder)
    unet_file, whisper_file = folder / "latentsync_unet.pt", folder / "whisper" / "tiny.pt"
    named = unet_file
    if damage == "missing":
        unet_file.unlink()
    elif damage == "truncated":
        data = unet_file.read_bytes()
        unet_file.write_bytes(data[: len(data) // 2])
    elif damage == "wrong_shape":  # large-v3's 128 mel bins in a file whose dims say 80
        checkpoint = torch.load(whisper_file, weights_only=True)
        checkpoint["model_state_dict"]["encoder.conv1.weight"] = torch.zeros(384, 128, 3)
        torch.save(checkpoint, whisper_file)
        named = whisper_file
    elif damage == "malicious":
        marker = tmp_path / "pwned"

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))
        torch.save({"state_dict": {"conv_in.weight": torch.zeros(1)}, "x": Payload()}, unet_file)
    elif damage == "not_whisper":
        torch.save({"encoder.conv1.weight": torch.zeros(1)}, whisper_file)  # a bare state dict, no dims
        named = whisper_file
    elif damage == "config":
        (folder / "unet.json").write_text(json.dumps(dict(tiny_config(), block_out_channels=[64, 64, 128, 128])))
        named = folder / "unet.json"
    with pytest.raises(CheckpointError) as err:
        LatentSync.load(folder)
    message = str(err.value)
    assert message.startswith(str(named)), message
    if damage == "missing":
        assert "scripts/fetch-models latentsync" in message
    if damage == "wrong_shape":
        assert "conv1.weight has shape (384, 128, 3), expected (384, 80, 3)" in message
    if damage == "malicious":
        assert "refused to load" in message and not (tmp_path / "pwned").exists()
    if damage == "config":
        assert "block_out_channels: [64, 64, 128, 128] (published: [320, 640, 1280, 1280])" in message
        assert "delete unet.json to use the published configuration" in message


# --------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def astronaut_landmarks():
    from skimage import data

    from lipsync.face.analysis import analyze_frames

    analysis = analyze_frames([data.astronaut()], fps=25.0, total=1)
    assert analysis.has_face[0]
    return analysis.landmarks[0]


def _template(tmp_path):
    from PIL import Image
    from skimage import data

    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def _speech(tmp_path, seconds: float):
    from tests.media_factory import write_wav

    wav = load_mono(MUSETALK_DATA / "test_audio.wav", rate=16000)[: int(seconds * 16000)]
    return write_wav(tmp_path / "speech.wav", (wav * 32767).astype(np.int16), 16000)


def test_a_render_repaints_the_mouth_and_leaves_the_rest(quick_folder, tmp_path, astronaut_landmarks):
    import av

    from lipsync.engine import RenderOptions
    from lipsync.engines import create_engine
    from lipsync.render import render
    from tests.media_factory import probe

    template = _template(tmp_path)
    speech = _speech(tmp_path, 0.72)  # 18 frames: a whole window of 16 and the last, shorter one
    engine = create_engine("latentsync", latentsync_models=quick_folder, latentsync_steps=2, device="cpu")
    assert engine.name == "latentsync" and engine.load_notes == []
    options = RenderOptions(device="cpu", crf=12, still_fps=25, chunk_frames=5, cache_dir=tmp_path / "cache")
    out, plain = tmp_path / "out.mp4", tmp_path / "plain.mp4"
    result = render(speech, template, out, engine=engine, options=options)
    assert result.engine == "latentsync" and probe(out)["frames"] == 18
    # the same template through the same encoder without lip-sync: what "unchanged" looks like
    render(speech, template, plain, engine=create_engine("passthrough"), options=options)

    def frames(path):
        with av.open(str(path)) as o:
            return [f.to_ndarray(format="rgb24").astype(int) for f in o.decode(video=0)]
    got, reference = frames(out), frames(plain)
    p = astronaut_landmarks
    mouth = (slice(int(p[51, 1]) - 4, int(p[57, 1]) + 4), slice(int(p[48, 0]), int(p[54, 0])))
    eyes = (slice(int(p[19, 1]), int(p[41, 1])), slice(int(p[36, 0]), int(p[45, 0])))
    for i in (3, 17):
        changed = np.abs(got[i] - reference[i]).mean(axis=2)
        # the stand-in weights paint coloured noise: plainly changed at the mouth, the eyes untouched
        assert changed[mouth].mean() > 15, changed[mouth].mean()
        assert changed[eyes].mean() < 1.5 and changed[:60].mean() < 1.5, (changed[eyes].mean(), changed[:60].mean())


def test_one_seed_one_video_however_the_frames_are_chunked(quick_folder, tmp_path):
    """Windows sit at fixed places in the output and the draws come in order: the same
    seed gives the same frames with any chunking, and another seed other frames."""
    from PIL import Image

    from lipsync.engine import FrameChunk, RenderContext, RenderOptions, TemplateInfo
    from lipsync.engines.latentsync.engine import LatentSyncEngine

    template = _template(tmp_path)
    speech = _speech(tmp_path, 0.8)
    still = np.asarray(Image.open(template).convert("RGB"))
    info = TemplateInfo(path=template, width=512, height=512, fps=25.0, frame_count=1, is_still=True)
    ctx = RenderContext(audio_path=speech, template=info, fps=25.0, frame_count=20,
                        options=RenderOptions(device="cpu", cache_dir=tmp_path / "cache"), device="cpu",
                        template_index=lambda i: 0)

    def run(engine, cuts):
        session = engine.start(ctx)
        out = []
        for lo, hi in zip(cuts, cuts[1:]):
            idx = np.arange(lo, hi)
            out.append(session.process(FrameChunk(np.repeat(still[None], hi - lo, 0), idx, np.zeros_like(idx))))
        return np.concatenate(out)

    engine = LatentSyncEngine(latentsync_models=quick_folder, latentsync_steps=1, latentsync_window=8, device="cpu")
    assert engine.frames_per_call == 8
    whole = run(engine, [0, 8, 16, 20])
    assert np.array_equal(whole, run(engine, [0, 8, 16, 20]))
    # the pipeline rounds chunks up to whole windows; a session given cut windows still keeps
    # each window's frames together within a chunk and its draws in order
    assert np.array_equal(whole, run(engine, [0, 16, 20]))
    other = LatentSyncEngine(latentsync_models=quick_folder, latentsync_steps=1, latentsync_window=8,
                             latentsync_seed=7, device="cpu")
    assert not np.array_equal(whole, run(other, [0, 8, 16, 20]))


def test_auto_takes_latentsync_only_on_a_gpu_with_room_and_says_why(quick_folder):
    from lipsync.engines import AUTO_ORDER, available_engines, create_engine

    assert AUTO_ORDER == ("latentsync", "musetalk", "wav2lip", "warp")
    engine = create_engine("auto", latentsync_models=quick_folder, device="cpu")
    assert engine.name == "warp"
    assert engine.load_notes[0].startswith("latentsync unavailable (it needs a CUDA GPU")
    report = available_engines(latentsync_models=quick_folder, device="cpu")
    assert report["latentsync"] == "available"
    assert report["auto"].startswith("available: warp (latentsync: it needs a CUDA GPU")
    # named, it runs wherever it is asked to (the CPU here)
    assert create_engine("latentsync", latentsync_models=quick_folder, device="cpu").name == "latentsync"
    assert available_engines()["latentsync"] == \
        "unavailable: no models folder configured (render.latentsync.models)"


def test_a_bad_window_or_precision_is_refused_naming_the_option(quick_folder):
    from lipsync.engines.latentsync.engine import LatentSyncEngine

    with pytest.raises(ValueError, match="window must be 1 to 24 frames"):
        LatentSyncEngine(latentsync_models=quick_folder, latentsync_window=32, device="cpu")
    with pytest.raises(ValueError, match="precision must be one of auto, fp16, fp32"):
        LatentSyncEngine(latentsync_models=quick_folder, latentsync_precision="bf16", device="cpu")
    engine = LatentSyncEngine(latentsync_models=quick_folder, latentsync_precision="fp16", device="cpu")
    assert engine.load_notes == ["latentsync: fp16 needs CUDA; running in fp32 on the CPU"]


# --------------------------------------------------------------------------- scripts/fetch-models latentsync


def test_fetch_models_latentsync_downloads_checks_and_loads(quick_folder, tmp_path):
    from tests.fake_hub import FakeHub, fetch_module, run_fetch

    files = fetch_module().LATENTSYNC_FILES
    assert [dest for *_, dest in files] == ["latentsync_unet.pt", "whisper/tiny.pt", "sd-vae/config.json",
                                            "sd-vae/diffusion_pytorch_model.safetensors"]
    target = tmp_path / "m"
    target.mkdir()
    # the published files need no config; the tiny stand-in's UNet brings its own
    (target / "unet.json").write_bytes((quick_folder / "unet.json").read_bytes())
    hub = FakeHub(quick_folder, files)
    try:
        r = run_fetch("latentsync", "--dir", str(target), "--base-url", hub.url)
    finally:
        hub.httpd.shutdown()
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(target.resolve())
    for *_, dest in files:
        assert (target / dest).read_bytes() == (quick_folder / dest).read_bytes()
    assert '[render.latentsync] models = "' in r.stderr

    bad = tmp_path / "bad"
    hub = FakeHub(quick_folder, files, tamper="tiny.pt")
    try:
        r = run_fetch("latentsync", "--dir", str(bad), "--base-url", hub.url)
    finally:
        hub.httpd.shutdown()
    assert r.returncode == 1 and "SHA-256 mismatch" in r.stderr
    assert not (bad / "whisper" / "tiny.pt").exists() and not list(bad.rglob("*.part"))


# --------------------------------------------------------------------------- configuration and command line


def test_the_configuration_names_the_engine_and_its_options(tmp_path, quick_folder):
    from daemon.config import ConfigError, from_dict
    from daemon.pipeline.engines import engine_options

    with pytest.raises(ConfigError, match=r'render.latentsync.models: required when render.engine = "latentsync"'):
        from_dict({"render": {"engine": "latentsync"}}, base=tmp_path)
    with pytest.raises(ConfigError) as err:  # every problem at once, each naming its option
        from_dict({"render": {"latentsync": {"window": 32, "guidance_scale": 0.5, "precision": "bf16"}}},
                  base=tmp_path)
    for option in ("render.latentsync.window", "render.latentsync.guidance_scale", "render.latentsync.precision"):
        assert option in str(err.value)
    cfg = from_dict({"render": {"engine": "latentsync", "latentsync": {
        "models": str(quick_folder), "inference_steps": 2, "seed": 7, "window": 8}}}, base=tmp_path)
    options = engine_options(cfg, "latentsync", device="cpu")
    assert options == {"device": "cpu", "latentsync_models": quick_folder, "latentsync_steps": 2,
                       "latentsync_guidance": 1.5, "latentsync_seed": 7, "latentsync_window": 8,
                       "latentsync_precision": "auto"}
    from lipsync.engines import create_engine

    engine = create_engine("latentsync", **options)
    assert (engine.steps, engine.seed, engine.window, engine.frames_per_call) == (2, 7, 8, 8)


def test_the_render_command_runs_latentsync_and_asks_for_its_models(tmp_path, quick_folder):
    import subprocess
    import sys

    from tests.daemon_harness import REPO
    from tests.media_factory import probe

    template, speech = _template(tmp_path), _speech(tmp_path, 0.2)
    base = [sys.executable, "-m", "daemon", "render", str(speech), str(template), "--engine", "latentsync",
            "--device", "cpu", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPSYNCD_")}
    r = subprocess.run([*base, "-o", str(tmp_path / "a.mp4")], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "the latentsync engine needs --models DIR" in r.stderr, r.stderr
    r = subprocess.run([*base, "-o", str(tmp_path / "b.mp4"), "--models", str(quick_folder)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert probe(tmp_path / "b.mp4")["frames"] == 5


def test_a_dropped_job_renders_with_latentsync_and_is_linked_like_any_other(tmp_path, quick_folder, seaweed,
                                                                           bucket, aws_env):
    """Through the daemon: the manifest names the engine, the config its models; the job is
    claimed, rendered, uploaded and announced in its sidecar like every other engine's."""
    from tests.test_e2e import download, drop, run_burst, sidecar_of, write_config

    cfg_path = write_config(tmp_path, seaweed, bucket, render={"latentsync": {
        "models": str(quick_folder), "inference_steps": 2}})
    inbox = tmp_path / "inbox"
    drop(inbox, "face.png", _template(tmp_path))
    drop(inbox, "speech.wav", _speech(tmp_path, 0.4))
    drop(inbox, "dub.job.json", json.dumps({"audio": "speech.wav", "templates": ["face.png"],
                                            "engine": "latentsync"}).encode())
    assert run_burst(cfg_path, timeout=300) == 0
    doc = sidecar_of(tmp_path, "dub")
    assert doc["state"] == "done", doc.get("error")
    assert doc["engine"] == "latentsync" and doc["outputs"][0]["engine"] == "latentsync"
    video = tmp_path / "dub.mp4"
    video.write_bytes(download(doc["outputs"][0]["url"]))
    from tests.media_factory import probe

    assert probe(video)["frames"] == 4  # 0.4 s at still_fps 10
