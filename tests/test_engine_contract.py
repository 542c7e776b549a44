"""One engine contract for both kinds of engine, one list of engine names, transient means transient.

The file engine here is a stand-in of the project's own for a renderer that makes the
whole video elsewhere (the kind a HeyGem server is): it really renders, with the
passthrough engine, into the output path it is given.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync.engine import (EngineSession, FileEngine, FileRenderRequest, FrameChunk, FrameEngine, RenderContext,
                            RenderOptions, RenderResult)
from lipsync.engines import NAMES, create_engine
from lipsync.errors import RendererBusyError, RendererUnreachableError, TransientRenderError
from lipsync.render import render

from daemon.config import ConfigError, from_dict
from daemon.errors import job_error_from
from daemon.intake.manifest import parse_manifest
from tests.media_factory import probe, write_plain_video, write_tone

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    return write_tone(folder / "a.wav", seconds=1.0, rate=16000), write_plain_video(folder / "t.mp4", seconds=1.0)


class StandInFileEngine(FileEngine):
    """Renders the whole file in one call, as a remote renderer would, and reports progress."""

    name = "stand-in"

    def __init__(self, fail_with: BaseException | None = None) -> None:
        super().__init__()
        self.fail_with = fail_with
        self.requests: list[FileRenderRequest] = []

    def render_file(self, request: FileRenderRequest) -> RenderResult:
        self.requests.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        request.progress(0.3)  # "the server says 30%"
        inner = render(request.audio, request.template.path, request.output, engine=create_engine("passthrough"),
                       options=request.options)
        return RenderResult(path=request.output, engine=self.name, duration=inner.duration, width=inner.width,
                            height=inner.height, fps=inner.fps, frames=inner.frames, notes=("rendered elsewhere",))


def test_a_file_engine_renders_through_the_same_call_as_frame_engines(media, tmp_path):
    audio, template = media
    engine = StandInFileEngine()
    reports: list[float] = []
    result = render(audio, template, tmp_path / "out.mp4", engine=engine, progress=reports.append)
    (request,) = engine.requests
    assert request.output == tmp_path / "out.mp4" and abs(request.audio_duration - 1.0) < 0.05
    assert result.engine == "stand-in" and result.notes == ("rendered elsewhere",)
    assert reports[0] == pytest.approx(0.3) and reports[-1] == 1.0 and reports == sorted(reports)
    info = probe(tmp_path / "out.mp4")
    assert abs(info["duration"] - 1.0) < 0.1 and info["video_codec"] == "h264"
    assert engine.load_notes == []  # a real attribute of every engine


def test_a_file_engines_video_is_finished_as_a_file(media, tmp_path):
    """A remote renderer hands back a file: that file is finished afterwards, and only the
    finished video is left under the output's name."""
    from lipsync.finish import FinishSpec

    audio, template = media
    engine = StandInFileEngine()
    result = render(audio, template, tmp_path / "out.mp4", engine=engine,
                    finish=FinishSpec(resolution="96x96", aspect="1:1"))
    (request,) = engine.requests
    assert request.output != tmp_path / "out.mp4"  # the remote file, finished into out.mp4
    info = probe(tmp_path / "out.mp4")
    assert (info["width"], info["height"]) == (96, 96) and (result.width, result.height) == (96, 96)
    assert abs(info["duration"] - 1.0) < 0.1 and "rendered elsewhere" in result.notes
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


@pytest.mark.parametrize("error", [RendererBusyError("gpu-01 is busy with another task"),
                                   RendererUnreachableError("gpu-01 did not answer")])
def test_a_busy_or_unreachable_renderer_is_transient(media, tmp_path, error):
    audio, template = media
    with pytest.raises(TransientRenderError) as raised:
        render(audio, template, tmp_path / "out.mp4", engine=StandInFileEngine(fail_with=error))
    mapped = job_error_from(raised.value)
    assert not mapped.permanent and mapped.code in ("renderer_busy", "renderer_unreachable")
    assert not (tmp_path / "out.mp4").exists()


class _OutOfGpuMemory(FrameEngine):
    """A frame engine that runs out of GPU memory in its first chunk, as any engine may."""

    name = "greedy"

    def start(self, ctx: RenderContext) -> EngineSession:
        class Session(EngineSession):
            def process(self, chunk: FrameChunk) -> np.ndarray:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return Session()


def test_gpu_out_of_memory_from_any_engine_is_a_transient_render_error(media, tmp_path):
    audio, template = media
    with pytest.raises(TransientRenderError, match="out of GPU memory in the greedy engine") as raised:
        render(audio, template, tmp_path / "out.mp4", engine=_OutOfGpuMemory())
    mapped = job_error_from(raised.value)
    assert (mapped.code, mapped.permanent) == ("render_transient", False)


@pytest.mark.gpu
def test_real_cuda_out_of_memory_in_a_frame_engine_is_transient(media, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from bench.gpu_check import GreedyEngine  # asks the GPU for twice the memory it has free

    audio, template = media
    with pytest.raises(TransientRenderError):
        render(audio, template, tmp_path / "out.mp4", engine=GreedyEngine(), options=RenderOptions(device="cuda"))
    torch.cuda.empty_cache()


# --------------------------------------------------------------------------- one list of names


def test_every_place_that_names_engines_takes_them_from_the_registry(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Engines", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z0-9]+)`", section, re.M)
    assert sorted(documented) == sorted(NAMES)
    config_comment = (REPO / "config.toml").read_text().split("[render]", 1)[1].split("[", 1)[0]
    for name in NAMES:
        assert f'"{name}"' in config_comment, name
    assert tomllib.loads((REPO / "config.toml").read_text())["render"]["engine"] in NAMES
    for name in NAMES:
        render_section = {"engine": name, "wav2lip": {"checkpoint": "w.pth"}, "musetalk": {"models": "m"},
                          "latentsync": {"models": "l"},
                          "heygem": {"servers": [{"url": "http://gpu-01:8383", "host_dir": "/srv/h"}]}}
        assert from_dict({"render": render_section}, base=tmp_path).render.engine == name
    with pytest.raises(ConfigError, match="lipgan"):
        from_dict({"render": {"engine": "lipgan"}}, base=tmp_path)
    manifest = tmp_path / "m.job.toml"
    manifest.write_text('audio = "a.wav"\ntemplates = ["t.mp4"]\nengine = "lipgan"\n')
    with pytest.raises(Exception, match=", ".join(NAMES)):
        parse_manifest(manifest)


def test_the_render_command_offers_exactly_the_registered_engines(capsys):
    from daemon.cli import main

    with pytest.raises(SystemExit):
        main(["render", "--help"])
    text = capsys.readouterr().out
    choices = re.search(r"--engine \{([^}]*)\}", text).group(1).split(",")
    assert choices == list(NAMES)
