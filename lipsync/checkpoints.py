"""Reading model weight files that people download themselves: safely, with errors they can act on.

A ``.pth``/``.bin`` file is a Python pickle, and unpickling can run arbitrary code. It is
read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers and refuses anything else, so a malicious file is rejected before it can act.
:func:`check_entries` compares a state dict with what a model needs and reports every
missing, unexpected, mis-shaped or non-finite entry at once. Every error names the file.
Shared by the engines that load weights (wav2lip, musetalk).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from lipsync.errors import CheckpointError, shorten

LISTED = 4  # names shown per kind of mismatch; the count is always given
# what torch's weights-only unpickler says when a pickle asks for code rather than data
_UNSAFE_MARKERS = ("GLOBAL", "Can only build", "Can only create", "reduce for unrecognized")


def size_text(size: int) -> str:
    return f"{size} bytes" if size < 10_000 else f"{size / 1e6:.1f} MB"


def listing(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown + (f", … ({len(names) - LISTED} more)" if len(names) > LISTED else "")


def read_torch_file(path: Path, *, what: str) -> object:
    """The unpickled content of ``path`` (tensors and containers only), or CheckpointError."""
    if not path.exists():
        raise CheckpointError("checkpoint file not found", path=path)
    if not path.is_file():
        raise CheckpointError("checkpoint path is not a regular file", path=path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as e:
        raise CheckpointError(f"cannot read the checkpoint: {e.strerror or e}", path=path) from None
    if size == 0:
        raise CheckpointError("checkpoint file is empty (0 bytes): the download did not complete", path=path)
    try:
        # memory-mapped where the format allows it (zip, torch >= 1.6): a 3 GB file then is not
        # read into memory twice on its way into the model
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except MemoryError:
        raise
    except pickle.UnpicklingError as e:
        reason = next((line.strip() for line in str(e).splitlines() if any(m in line for m in _UNSAFE_MARKERS)), "")
        if reason:
            raise CheckpointError(
                "refused to load: the file contains Python objects other than tensors, which could "
                f"run code when unpickled; use a genuine {what} checkpoint ({shorten(reason, 160)})",
                path=path) from None
        raise CheckpointError(f"not a readable PyTorch checkpoint ({size_text(size)}): the file is truncated "
                              "or corrupt", path=path) from None
    except Exception as e:  # torch reports damaged files through many exception types
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"not a readable PyTorch checkpoint ({size_text(size)}): the file is truncated or corrupt "
            f"({shorten(detail, 160)})", path=path) from None


def check_entries(state: Mapping[str, object], expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
                  path: Path, *, what: str, hint: str = "") -> None:
    """Raise one CheckpointError listing everything in ``state`` that does not fit ``expected``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = []
    for name, (shape, dtype) in expected.items():
        value = state.get(name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            wrong.append(f"{name} is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != shape:
            wrong.append(f"{name} has shape {tuple(value.shape)}, expected {shape}")
        elif value.is_floating_point() != dtype.is_floating_point:
            wrong.append(f"{name} has dtype {value.dtype}, expected {dtype}")
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {len(expected)} entries missing ({listing(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({listing(unexpected)})")
        if wrong:
            parts.append(f"{len(wrong)} mismatched ({listing(wrong)})")
        raise CheckpointError(f"not a {what} checkpoint: " + "; ".join(parts) + hint, path=path)
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{len(bad)} entries contain NaN or infinite values ({listing(bad)}): "
                              "the file is damaged or from a diverged training run", path=path)
