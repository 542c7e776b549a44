"""The face every engine animates is the speaker's, not a face-like decoy: chosen by the
detector's confidence and kept by continuity, never by size. The decoy is a large,
out-of-focus poster of a face behind the presenter (tests/media_factory.decoy_scene):
larger than the presenter's face, far less confident -- like a badge, a mission patch or
a face in the background."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from lipsync.engine import RenderOptions
from lipsync.engines import create_engine
from lipsync.face.analysis import analyze_frames
from lipsync.face.landmarks import Detection, load_landmark_models, pick_face
from lipsync.face.tracking import to_gray
from lipsync.media.audio import load_mono
from lipsync.render import render
from tests import media_factory as mf

pytestmark = pytest.mark.xdist_group("face-choice")


def test_the_decoy_is_the_larger_and_the_less_confident_detection():
    frame, mouths = mf.decoy_scene()
    found = load_landmark_models().detect(to_gray(frame), 0)
    assert len(found) == 2
    presenter = min(found, key=lambda d: abs((d.box[0] + d.box[2]) / 2 - mouths["presenter"][0]))
    poster = next(d for d in found if d is not presenter)
    size = lambda d: d.box[2] - d.box[0]  # noqa: E731
    assert size(poster) > size(presenter) and poster.score < presenter.score - 1.0


def test_pick_face_takes_confidence_and_keeps_continuity():
    face, decoy = Detection((100, 100, 180, 180), 1.5), Detection((300, 300, 460, 460), 0.1)
    assert pick_face([decoy, face], None) is face  # not the larger one
    strong = Detection((300, 300, 460, 460), 1.6)
    assert pick_face([face, strong], face.box) is face  # the followed face stays: 1.6 is not 1.5 + 1.0
    assert pick_face([strong], face.box) is strong  # the followed face gone, a clear face elsewhere
    assert pick_face([decoy], face.box) is None  # ... but not a doubtful one: the face is lost instead


def test_the_analysis_follows_the_presenter_in_every_frame():
    frames, mouths = [], []
    for i in range(12):
        frame, where = mf.decoy_scene((int(round(3 * np.sin(i / 2))), int(round(2 * np.cos(i / 3)))))
        frames.append(frame)
        mouths.append(where)
    analysis = analyze_frames(frames, fps=25)
    assert analysis.has_face.all()
    for i, where in enumerate(mouths):
        mouth = analysis.landmarks[i, 48:68].mean(axis=0)
        assert np.hypot(*(mouth - where["presenter"])) < 15, (i, mouth, where)


def speech_of(folder, seconds: float):
    pcm = (load_mono(mf.SPEECH_SHORT, rate=16000)[2000:2000 + int(16000 * seconds)] * 32767).astype(np.int16)
    return mf.write_wav(folder / "speech.wav", pcm, 16000)


def _changed_around(out, template_frames, point, radius=22) -> float:
    """Mean absolute change in a square around ``point``, over the output's frames."""
    x, y = (int(round(v)) for v in point)
    with av.open(str(out)) as c:
        got = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    diffs = [np.abs(g[y - radius:y + radius, x - radius:x + radius] - t[y - radius:y + radius, x - radius:x + radius])
             .mean() for g, t in zip(got, template_frames)]
    return float(np.mean(diffs))


@pytest.mark.parametrize("name", ["warp", "wav2lip", "musetalk"])
def test_every_engine_moves_the_presenters_mouth_and_not_the_posters(name, tmp_path):
    # half a second of speech; MuseTalk's CPU path costs seconds a frame, so 4 frames there
    speech = speech_of(tmp_path, 0.16 if name == "musetalk" else 0.5)
    options = {"device": "cpu"}
    if name == "wav2lip":
        import torch

        from tests import wav2lip_fill

        checkpoint = tmp_path / "wav2lip_gan.pth"
        torch.save({"state_dict": wav2lip_fill.deterministic_state_dict(), "global_step": 0}, checkpoint)
        options.update(checkpoint=checkpoint, batch_size=4)
    if name == "musetalk":
        from tests.musetalk_fill import write_published_folder

        options.update(musetalk_models=write_published_folder(tmp_path / "models"), musetalk_batch_size=4)
    engine = create_engine(name, **options)
    if name == "musetalk":  # a still: its VAE costs seconds per face on a CPU, so one face
        frame, mouths = mf.decoy_scene()
        template = tmp_path / "scene.png"
        Image.fromarray(frame).save(template)
        template_frames, where = [frame.astype(int)] * 64, mouths
    else:
        template, all_mouths = mf.write_decoy_video(tmp_path / "scene.mp4")
        with av.open(str(template)) as c:
            template_frames = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
        template_frames = (template_frames + template_frames[::-1]) * 4  # the render ping-pongs a short clip
        where = all_mouths[0]
    out = tmp_path / "out.mp4"
    render(speech, template, out, engine=engine, options=RenderOptions(device="cpu", crf=12, still_fps=25,
                                                                       cache_dir=tmp_path / "cache"))
    presenter = _changed_around(out, template_frames, where["presenter"], radius=12)
    poster = _changed_around(out, template_frames, where["poster"], radius=18)
    assert presenter > 3.0 * max(poster, 1.0), (presenter, poster)
    assert poster < 2.5, poster  # the poster's mouth is only re-encoded, never animated
