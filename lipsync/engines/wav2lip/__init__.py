"""Wav2Lip-compatible neural lip-sync; the generator checkpoint is supplied by the user.

    from lipsync.engines.wav2lip import Wav2LipEngine
    engine = Wav2LipEngine("models/wav2lip_gan.pth", batch_size=32, precision="auto", device="auto")

Importing this package is cheap; torch and librosa load with the engine module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lipsync.engines.wav2lip.engine import Wav2LipEngine

__all__ = ["Wav2LipEngine"]


def __getattr__(name: str) -> Any:
    # lazy, so that `lipsync.engines.wav2lip.mel` or `.checkpoint` can be imported alone
    if name == "Wav2LipEngine":
        from lipsync.engines.wav2lip.engine import Wav2LipEngine

        return Wav2LipEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
