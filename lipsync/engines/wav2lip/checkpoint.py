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

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch

from lipsync.checkpoints import check_entries, read_torch_file
from lipsync.engines.wav2lip.model import Wav2LipGenerator
from lipsync.errors import CheckpointError

_PREFIX = "module."


def expected_entries() -> "OrderedDict[str, tuple[tuple[int, ...], torch.dtype]]":
    """Name → (shape, dtype) of every entry the generator needs, in registration order."""
    with torch.device("meta"):  # shapes only; allocates nothing
        model = Wav2LipGenerator()
    return OrderedDict((k, (tuple(v.shape), v.dtype)) for k, v in model.state_dict().items())


def _read(path: Path) -> object:
    return read_torch_file(path, what="Wav2Lip generator")


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


def validate(state: Mapping[str, object], path: Path) -> None:
    """Raise one CheckpointError listing everything that does not fit the generator."""
    hint = ""
    if not any(k.startswith("face_decoder_blocks.") for k in state):
        hint = ("; it has no face decoder, so it is probably a discriminator or SyncNet checkpoint "
                "(lipsync_expert.pth, visual_quality_disc.pth) rather than the generator "
                "(wav2lip.pth or wav2lip_gan.pth)")
    check_entries(state, expected_entries(), path, what="Wav2Lip generator", hint=hint)


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
