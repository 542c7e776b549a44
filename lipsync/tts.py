"""Text to speech: a job may bring text instead of audio, spoken here before the render.

Two backends, chosen by configuration:

* ``espeak-ng`` -- the Debian package's command line: offline, many languages, robotic;
  ``voice`` is an espeak-ng voice name (``en``, ``en-us``, ``de``, ``cmn``, ...);
* ``heygem`` -- the TTS service of a HeyGem / Duix.Avatar deployment (``POST /v1/invoke``
  on port 18180): natural speech in a voice trained there; ``voice`` is its speaker id.
  The request carries the service's fixed sampling fields; the answer is the WAV itself.

Either way the result is a WAV file, which the caller keeps with the job's inputs.
Failures are permanent -- :class:`lipsync.errors.TextError` (empty or unreadable text),
:class:`lipsync.errors.VoiceError` (a voice the backend does not have: the message names
it, and the backend's voices where it can list them) -- or
:class:`lipsync.errors.TransientRenderError` (the service unreachable or busy: retry).
"""

from __future__ import annotations

import difflib
import io
import json
import shutil
import subprocess
import urllib.error
import urllib.request
import wave
from dataclasses import dataclass
from pathlib import Path

from lipsync.errors import EngineUnavailableError, LipsyncError, TextError, TransientRenderError, VoiceError

ESPEAK, HEYGEM = "espeak-ng", "heygem"
BACKENDS = (ESPEAK, HEYGEM)
MAX_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class TtsSettings:
    backend: str = "espeak-ng"
    voice: str = "en"  # espeak-ng voice, or the HeyGem speaker id
    url: str = ""  # heygem: base URL of the TTS service, e.g. http://gpu-host:18180
    rate: int = 165  # espeak-ng words per minute
    timeout: float = 300.0  # heygem: seconds for one request


def read_text(path: Path) -> str:
    """The text of a NAME.txt drop: UTF-8 (a BOM is fine), not empty, not huge."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise TextError(f"cannot read the text: {e.strerror or e}", path=path) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TextError(f"the text is not UTF-8 (byte {e.start})", path=path) from None
    return check_text(text, path)


def check_text(text: str, path: Path | None = None) -> str:
    text = text.strip()
    if not text:
        raise TextError("the text to speak is empty", path=path)
    if len(text) > MAX_TEXT_CHARS:
        raise TextError(f"the text to speak is {len(text)} characters, more than {MAX_TEXT_CHARS}", path=path)
    return text


def synthesize(text: str, out: Path, settings: TtsSettings, *, source: Path | None = None) -> Path:
    """Speak ``text`` into the WAV file ``out`` (written whole or not at all)."""
    text = check_text(text, source)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.part")
    try:
        if settings.backend == ESPEAK:
            _espeak(text, tmp, settings, source)
        elif settings.backend == HEYGEM:
            _heygem(text, tmp, settings, source)
        else:
            raise EngineUnavailableError(f"unknown text-to-speech backend {settings.backend!r}; use one of "
                                         f"{', '.join(BACKENDS)}")
        _check_wav(tmp, source)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _espeak(text: str, out: Path, settings: TtsSettings, source: Path | None) -> None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EngineUnavailableError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    # the text goes in on stdin: never through a shell, never mistaken for an option
    done = subprocess.run([exe, "-v", settings.voice, "-s", str(int(settings.rate)), "-w", str(out), "--stdin"],
                          input=text.encode("utf-8"), capture_output=True, timeout=600, check=False)
    err = done.stderr.decode("utf-8", "replace").strip()
    if "does not exist" in err or ("voice" in err.lower() and done.returncode != 0):
        raise VoiceError(unknown_voice("espeak-ng", settings.voice, espeak_voices()))
    if done.returncode != 0:
        raise LipsyncError(f"espeak-ng could not speak the text with voice {settings.voice!r}: {err[:300]}",
                           path=source)


def espeak_voices() -> list[str]:
    """The language codes espeak-ng accepts as ``-v`` (``espeak-ng --voices``), [] if unknown."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return []
    try:
        listing = subprocess.run([exe, "--voices"], capture_output=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [line.split() for line in listing.decode("utf-8", "replace").splitlines()[1:]]
    return sorted({row[1] for row in rows if len(row) > 1})


def unknown_voice(backend: str, voice: str, voices: list[str], detail: str = "") -> str:
    """The message for a voice the backend lacks: the voice, a near match, the voices."""
    message = f"{backend} has no voice {voice!r}" + (f" ({detail})" if detail else "")
    near = difflib.get_close_matches(voice.lower(), voices, n=1, cutoff=0.6)
    if near:
        message += f"; did you mean {near[0]!r}?"
    if voices:
        shown = ", ".join(voices[:40]) + (f", ... ({len(voices)} in all)" if len(voices) > 40 else "")
        message += f"{'' if near else '.'} Its voices: {shown}"
    return message


def _heygem(text: str, out: Path, settings: TtsSettings, source: Path | None) -> None:
    if not settings.url:
        raise EngineUnavailableError("the heygem text-to-speech backend needs [tts] url")
    body = json.dumps({
        "speaker": settings.voice, "text": text, "format": "wav", "topP": 0.7, "max_new_tokens": 1024,
        "chunk_length": 100, "repetition_penalty": 1.2, "temperature": 0.7, "need_asr": False,
        "streaming": False, "is_fixed_seed": 0, "is_norm": 0, "reference_audio": None, "reference_text": None,
    }).encode("utf-8")
    request = urllib.request.Request(settings.url.rstrip("/") + "/v1/invoke", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout) as answer:
            out.write_bytes(answer.read())
    except urllib.error.HTTPError as e:
        detail = e.read(300).decode("utf-8", "replace")
        if e.code >= 500 or e.code == 429:
            raise TransientRenderError(f"the HeyGem TTS service answered {e.code}: {detail}") from None
        if e.code in (400, 404, 422):
            # the service lists no voices: a refusal names the speaker id it could not use
            raise VoiceError(unknown_voice("the HeyGem TTS service", settings.voice, [],
                                           f"it refused the request, {e.code}: {detail.strip()[:200]}")
                             + "; a voice is the speaker id of a voice trained on that service") from None
        raise LipsyncError(f"the HeyGem TTS service refused the text ({e.code}): {detail}", path=source) from None
    except (urllib.error.URLError, OSError) as e:
        raise TransientRenderError(f"the HeyGem TTS service at {settings.url} is unreachable: "
                                   f"{getattr(e, 'reason', e)}") from None


def _check_wav(path: Path, source: Path | None) -> None:
    try:
        with wave.open(io.BytesIO(path.read_bytes())) as w:
            frames, rate = w.getnframes(), w.getframerate()
    except (wave.Error, EOFError, OSError) as e:
        raise LipsyncError(f"the text-to-speech backend returned no usable WAV ({e})", path=source) from None
    if rate <= 0 or frames / rate < 0.05:
        raise LipsyncError("the text-to-speech backend returned silence (no audio)", path=source)
