"""The weight files the diffusion engines (musetalk, latentsync) share: JSON configs, state
dicts in ``.pt``/``.pth``/``.bin`` or ``.safetensors``, the sd-vae-ft-mse VAE under both of
its spellings, and strict loading that reports every problem at once.

Pickled files go through :func:`lipsync.checkpoints.read_torch_file`
(``torch.load(weights_only=True)``): tensors and plain containers only.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lipsync.checkpoints import check_entries, listing, read_torch_file
from lipsync.errors import CheckpointError

VAE_DIR = "sd-vae"
VAE_WHAT = "sd-vae-ft-mse VAE"
VAE_SIZES = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512],
             "layers_per_block": 2}
_VAE_OLD_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def file_finder(root: Path, what: str, fetch: str):
    """``one(fetched, *alternatives)``: the path of a file of the models folder ``root`` --
    ``fetched`` (what ``scripts/fetch-models FETCH`` downloads) or an accepted alternative,
    a safetensors file first -- or one CheckpointError naming the file and the way to get it."""
    if not root.is_dir():
        raise CheckpointError(f"the {what} models folder does not exist (see scripts/fetch-models {fetch})", path=root)

    def one(fetched: str, *alternatives: str) -> Path:
        for name in sorted((fetched, *alternatives), key=lambda n: not n.endswith(".safetensors")):
            if (root / name).is_file():
                return root / name
        also = f" (or {', '.join(a.rsplit('/', 1)[-1] for a in alternatives)})" if alternatives else ""
        raise CheckpointError(f"missing{also}: download the {what} files into this folder "
                              f"(scripts/fetch-models {fetch})", path=root / fetched)
    return one


def build_vae(config: dict):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(config)


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"not a readable JSON config: {e}", path=path) from None
    if not isinstance(data, dict):
        raise CheckpointError("the config is not a JSON object", path=path)
    return {k: v for k, v in data.items() if not k.startswith("_")}


def read_state(path: Path, what: str = "model") -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.stat().st_size:
            raise CheckpointError("the file is empty (0 bytes): the download did not complete", path=path)
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"not a readable safetensors file (truncated or corrupt: {e})", path=path) from None
    obj = read_torch_file(path, what=what)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"the file holds {type(obj).__name__}, not a model state_dict", path=path)
    return dict(obj)


def vae_state(raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The VAE entries under diffusers' current names (the published file uses the old ones)."""
    out = {}
    for name, value in raw.items():
        parts = name.split(".")
        if len(parts) >= 5 and parts[1] == "mid_block" and parts[2] == "attentions" and parts[-2] in _VAE_OLD_NAMES:
            new = ".".join(parts[:-2] + [_VAE_OLD_NAMES[parts[-2]], parts[-1]])
            if value.dim() == 4 and value.shape[-2:] == (1, 1):  # very old files hold 1x1 convs
                value = value[:, :, 0, 0]
            name = new
        out[name] = value
    return out


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, *, what: str,
              config: Path | None = None, published: Mapping[str, Any] | None = None, fetch: str = "",
              restore: str = "") -> None:
    """Check ``state`` against ``module`` (every problem at once), then load it strictly.

    ``module`` was built from ``config``: when every entry is there by name and only shapes
    differ, the config and the weights disagree about the model's sizes, and the error
    names the config -- the small file that was edited -- rather than a good multi-GB
    download that would be fetched again for nothing."""
    expected = OrderedDict((k, (tuple(v.shape), v.dtype)) for k, v in module.state_dict().items())
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != expected[k][0]]
    edited = _departures(config, published or {}) if config is not None and shapes else []
    if edited:
        raise CheckpointError(
            f"the config departs from the published {what} ({listing(edited)}) and so disagrees with the weights "
            f"in {path.name} ({len(shapes)} entries differ in size, e.g. {shapes[0]}: "
            f"{tuple(state[shapes[0]].shape)} in the file, {expected[shapes[0]][0]} by the config); "
            f"{restore or f'restore the published {config.name} (scripts/fetch-models {fetch})'}, the weights "
            "need no new download",
            path=config)
    check_entries(state, expected, path, what=what)
    module.load_state_dict({k: state[k].to(expected[k][1]) for k in expected}, strict=True)


def _departures(config: Path, published: Mapping[str, Any]) -> list[str]:
    """``key: value (published: value)`` for each size-deciding value of ``config`` that is not
    the published one."""
    try:
        values = read_config(config)
    except CheckpointError:
        return []
    return [f"{k}: {values[k]} (published: {v})" for k, v in published.items() if k in values and values[k] != v]
