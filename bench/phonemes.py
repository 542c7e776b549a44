"""Synthetic speech whose phoneme times are known: espeak-ng through its C library.

The ``espeak-ng`` command prints phoneme names but not when they are spoken; the library
reports a phoneme event, with its sample position, for every phoneme it synthesises. That
gives the ground truth a viewer's eye checks against: the lips must close on /p b m/, and
/a/ /i/ /u/ must look different.

    text_with_phonemes("Bob bought a map", "en-us", path)  -> [Phoneme("b", 0.12, 0.19), ...]

Needs ``libespeak-ng.so.1`` (Debian: ``libespeak-ng1``, which ``espeak-ng`` depends on).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.media_factory import write_wav

_ROOT = Path(__file__).resolve().parent.parent

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7
_CHARS_UTF8 = 1
_RATE_PARAMETER = 1


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Phoneme:
    name: str  # espeak-ng's mnemonic, e.g. "b", "aI", "i:"
    start: float  # seconds
    end: float


class _Espeak:
    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        self.lib = ctypes.CDLL(name)
        self.rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 500, None,
                                               _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
        if self.rate <= 0:
            raise RuntimeError("espeak-ng could not start (is espeak-ng-data installed?)")
        self.samples: list[np.ndarray] = []
        self.events: list[tuple[str, int]] = []
        self._keep = _CALLBACK(self._collect)  # referenced, so the C side's pointer stays valid
        self.lib.espeak_SetSynthCallback(self._keep)

    def _collect(self, wav, count, events) -> int:
        if count > 0:
            self.samples.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        k = 0
        while events[k].type != _EVENT_LIST_TERMINATED:
            if events[k].type == _EVENT_PHONEME:
                self.events.append((events[k].id.decode("ascii", "replace").rstrip("\0"), events[k].sample))
            k += 1
        return 0

    def speak(self, text: str, voice: str, words_per_minute: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
        self.samples, self.events = [], []
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE_PARAMETER, words_per_minute, 0)
        data = text.encode("utf-8") + b"\0"
        self.lib.espeak_Synth(data, len(data), 0, 0, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        pcm = np.concatenate(self.samples) if self.samples else np.zeros(0, np.int16)
        return pcm, list(self.events)


def text_with_phonemes(text: str, voice: str, path: Path, words_per_minute: int = 150) -> list[Phoneme]:
    """Speak ``text`` with the espeak-ng ``voice`` into the WAV ``path``; the phonemes with
    their times. Pauses between words carry no phoneme.

    Each text is spoken by a new process (``python -m bench.phonemes``, about 0.2 s): the
    library keeps state from one text to the next, and its pauses between clauses came out
    longer after other texts (the voice bench's Spanish: 5.42 s spoken first, 5.49 s after
    the English, 5.53 s after the German), so the same text was the same audio only after
    the same texts. Ending the library and starting it again in one process hangs."""
    spoken = subprocess.run([sys.executable, "-m", "bench.phonemes", voice, str(words_per_minute), str(path)],
                            input=text, capture_output=True, text=True, cwd=_ROOT, check=False)
    if spoken.returncode != 0:
        raise RuntimeError(f"espeak-ng could not speak {voice!r}: {spoken.stderr.strip()[-500:]}")
    reply = json.loads(spoken.stdout)
    events, samples, rate = reply["events"], reply["samples"], float(reply["rate"])
    phonemes = []
    for k, (name, sample) in enumerate(events):
        end = events[k + 1][1] if k + 1 < len(events) else samples
        if name and name != "_" and end > sample:  # "_": a pause
            phonemes.append(Phoneme(name, sample / rate, end / rate))
    return phonemes


def _speak_once(voice: str, words_per_minute: int, path: Path) -> None:
    """The child's side: the text from standard input into ``path``; the events, the
    sample count and the rate as JSON on standard output."""
    engine = _Espeak()
    pcm, events = engine.speak(sys.stdin.read(), voice, words_per_minute)
    write_wav(path, pcm, engine.rate)
    json.dump({"events": events, "samples": int(pcm.size), "rate": engine.rate}, sys.stdout)


BILABIALS = frozenset({"p", "b", "m", "p#", "b#", "ph", "m-"})


def is_bilabial(name: str) -> bool:
    return name in BILABIALS


if __name__ == "__main__":
    _speak_once(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
