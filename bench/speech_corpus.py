"""The corpus of real recorded speech the ``warp`` engine is judged on, and how it was made.

    python bench/speech_corpus.py MIRRORS_DIR     # rebuild tests/data/speech/ from the sources

Every clip is a recording of a person speaking, shipped as example audio by an open
talking-head project under a licence that allows redistribution (Apache-2.0 or MIT), cut
to at most ``seconds`` from ``start``, mixed to mono and resampled to 16 kHz FLAC. The
table below is the one definition: the benchmark reads it, tests/data/README lists it, a
test checks the two agree and that every file is there.

``part`` splits the corpus by speaker: ``tune`` voices are the ones the engine's constants
may be chosen on; ``held-out`` voices are only ever reported on. A voice never moves from
held-out to tune after it has been looked at.

``MIRRORS_DIR`` holds a clone of each source repository as ``owner+name/`` (any clone
that has the commit listed), so the corpus can be rebuilt and checked byte for byte against the
sources; nothing here downloads anything.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lipsync.media.audio import load_mono  # noqa: E402

SPEECH_DIR = ROOT / "tests" / "data" / "speech"
RATE = 16000

SADTALKER = ("OpenTalker/SadTalker", "cd4c0465ae0b54a6f85af57f5c65fec9fe23e7f8", "Apache-2.0")
MUSETALK = ("TMElyralab/MuseTalk", "0a89dec45a0192b824e3cf4daf96c239440c5ed8", "MIT")
LATENTSYNC = ("bytedance/LatentSync", "a229c3948406bc2cf6eaf4873e662e70c6a04746", "Apache-2.0")


@dataclass(frozen=True)
class Voice:
    name: str  # file stem under tests/data/speech/
    language: str  # BCP 47
    part: str  # "tune" or "held-out"
    source: tuple[str, str, str]  # repository, commit, licence
    path: str  # inside the repository
    start: float = 0.0
    seconds: float = 10.0
    about: str = ""

    @property
    def file(self) -> Path:
        return SPEECH_DIR / f"{self.name}.flac"


VOICES = (
    # ---- tune: the engine's constants may be chosen on these
    Voice("en-radio31", "en", "tune", SADTALKER, "examples/driven_audio/RD_Radio31_000.wav",
          about="a weekly radio address, as the file name says"),
    Voice("en-musetalk", "en", "tune", MUSETALK, "data/audio/eng.wav", start=2.0,
          about="a talk"),
    Voice("zh-yongen", "zh", "tune", MUSETALK, "data/audio/yongen.wav",
          about="Mandarin; the real Chinese voice that scored 0.70 in issue 28"),
    Voice("de-speech", "de", "tune", SADTALKER, "examples/driven_audio/deyu.wav",
          about="German"),
    # ---- held out: reported on, never tuned on
    Voice("en-radio36", "en", "held-out", SADTALKER, "examples/driven_audio/RD_Radio36_000.wav",
          about="a weekly radio address, as the file name says"),
    Voice("en-latentsync", "en", "held-out", LATENTSYNC, "assets/demo2_audio.wav",
          about="a presenter"),
    Voice("zh-news", "zh", "held-out", SADTALKER, "examples/driven_audio/chinese_news.wav",
          about="Mandarin, a news reading"),
    Voice("zh-sun", "zh", "held-out", MUSETALK, "data/audio/sun.wav",
          about="Mandarin, a talk"),
    Voice("ja-speech", "ja", "held-out", SADTALKER, "examples/driven_audio/japanese.wav",
          about="Japanese"),
    Voice("ru-speech", "ru", "held-out", SADTALKER, "examples/driven_audio/eluosi.wav",
          about="Russian"),
    Voice("fr-speech", "fr", "held-out", SADTALKER, "examples/driven_audio/fayu.wav",
          about="French"),
)


def voices(part: str | None = None) -> list[Voice]:
    return [v for v in VOICES if part is None or v.part == part]


def write_flac(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """16-bit mono FLAC of float samples in -1..1."""
    from tests.media_factory import write_mono

    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)
    return write_mono(path, pcm, rate, container="flac", codec="flac")


def build(voice: Voice, mirrors: Path) -> Path:
    repo, commit, _licence = voice.source
    import subprocess
    import tempfile

    checkout = mirrors / repo.replace("/", "+")
    if (checkout / "repo").is_dir():  # a mirror folder holding the git directory
        checkout = checkout / "repo"
    data = subprocess.run(["git", "-C", str(checkout), "show", f"{commit}:{voice.path}"], capture_output=True,
                          check=True).stdout
    with tempfile.NamedTemporaryFile(suffix=Path(voice.path).suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        samples = load_mono(Path(tmp.name), RATE)
    first = int(voice.start * RATE)
    clip = samples[first:first + int(voice.seconds * RATE)]
    SPEECH_DIR.mkdir(parents=True, exist_ok=True)
    return write_flac(voice.file, clip)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.split("\n\n")[1])
    mirrors = Path(sys.argv[1])
    for voice in VOICES:
        path = build(voice, mirrors)
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
