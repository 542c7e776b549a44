"""Loading a user-supplied Wav2Lip generator checkpoint safely, with errors a user can act on.

A ``.pth`` file is a Python pickle, and unpickling can run arbitrary code. Checkpoints are
therefore read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers and refuses anything else, so a malicious file is rejected before it can act.

Accepted layouts (all as published or commonly re-saved):
  * ``{"state_dict": {...}, "optimizer": ..., "global_step": ..., ...}`` (the published files)
  * the same with every key prefixed ``module.`` (saved from ``nn.DataParallel``)
  * a bare state_dict

The entries are then checked against the generator's own state_dict, and every missing,
unexpected or mis-shaped entry is reported at once; every error names the file.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch

from lipsync.engines.wav2lip.model import Wav2LipGenerator
from lipsync.errors import CheckpointError

_PREFIX = "module."
_LISTED = 4
# what torch's weights-only unpickler says when a pickle asks for code rather than data
_UNSAFE_MARKERS = ("GLOBAL", "Can only build", "Can only create", "reduce for unrecognized")  # names shown per kind of mismatch; the count is always given


def expected_entries() -> "OrderedDict[str, tuple[tuple[int, ...], torch.dtype]]":
    """Name → (shape, dtype) of every entry the generator needs, in registration order."""
    with torch.device("meta"):  # shapes only; allocates nothing
        model = Wav2LipGenerator()
    return OrderedDict((k, (tuple(v.shape), v.dtype)) for k, v in model.state_dict().items())


def _size_text(size: int) -> str:
    return f"{size} bytes" if size < 10_000 else f"{size / 1e6:.1f} MB"


def _read(path: Path) -> object:
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
        return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except pickle.UnpicklingError as e:
        reason = next((line.strip() for line in str(e).splitlines() if any(m in line for m in _UNSAFE_MARKERS)), "")
        if reason:
            raise CheckpointError(
                "refused to load: the file contains Python objects other than tensors, which could "
                f"run code when unpickled ({reason[:200]}); use a genuine Wav2Lip generator checkpoint",
                path=path) from None
        raise CheckpointError(f"not a readable PyTorch checkpoint ({_size_text(size)}): the file is truncated "
                              "or corrupt", path=path) from None
    except Exception as e:  # torch reports damaged files through many exception types
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"not a readable PyTorch checkpoint ({_size_text(size)}): the file is truncated or corrupt "
            f"({detail[:200]})", path=path) from None


def _state_dict_of(obj: object, path: Path) -> "OrderedDict[str, object]":
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and obj and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = ", ".join(sorted(map(str, obj))[:8])
        raise CheckpointError(f"no 'state_dict' in the checkpoint and it is not a bare state_dict (keys: {keys})",
                              path=path)
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"the checkpoint holds {type(obj).__name__}, not a model state_dict", path=path)
    return OrderedDict((str(k).removeprefix(_PREFIX), v) for k, v in obj.items())


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f", … ({len(names) - _LISTED} more)" if len(names) > _LISTED else "")


def validate(state: Mapping[str, object], path: Path) -> None:
    """Raise one CheckpointError listing everything that does not fit the generator."""
    expected = expected_entries()
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
            parts.append(f"{len(missing)} of {len(expected)} entries missing ({_listing(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
        if wrong:
            parts.append(f"{len(wrong)} mismatched ({_listing(wrong)})")
        hint = ""
        if not any(k.startswith("face_decoder_blocks.") for k in state):
            hint = ("; it has no face decoder, so it is probably a discriminator or SyncNet checkpoint "
                    "(lipsync_expert.pth, visual_quality_disc.pth) rather than the generator "
                    "(wav2lip.pth or wav2lip_gan.pth)")
        raise CheckpointError("not a Wav2Lip generator checkpoint: " + "; ".join(parts) + hint, path=path)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{len(bad)} entries contain NaN or infinite values ({_listing(bad)}): "
                              "the file is damaged or from a diverged training run", path=path)


def load_state_dict(path: str | Path) -> "OrderedDict[str, torch.Tensor]":
    """The generator's state_dict from ``path``, validated, floats as float32, on the CPU."""
    path = Path(path)
    state = _state_dict_of(_read(path), path)
    validate(state, path)
    expected = expected_entries()
    return OrderedDict((k, state[k].to(expected[k][1])) for k in expected)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Wav2LipGenerator:
    """A ready generator (eval mode, float32) on ``device``, or CheckpointError naming ``path``."""
    model = Wav2LipGenerator()
    model.load_state_dict(load_state_dict(path), strict=True)
    return model.eval().requires_grad_(False).to(device)
