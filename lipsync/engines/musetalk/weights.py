"""The MuseTalk 1.5 weight files: where they are, how they are read, what must be in them.

Layout (the one the authors publish, under one models folder)::

    musetalkV15/unet.pth        UNet2DConditionModel state dict (torch.save, ~3.4 GB)
    musetalkV15/musetalk.json   its config
    sd-vae/config.json          AutoencoderKL (sd-vae-ft-mse), diffusers format
    sd-vae/diffusion_pytorch_model.bin | .safetensors
    whisper/config.json         whisper-tiny, transformers format (only the encoder runs)
    whisper/pytorch_model.bin | model.safetensors
    whisper/preprocessor_config.json

Everything is read from local files only (no hub access). Pickled files are read with
``torch.load(weights_only=True)``, which rebuilds tensors and plain containers and refuses
anything else, so a malicious file is rejected before it can run code; safetensors files
are used when present. Both spellings of the VAE's mid-block attention (the published
file's ``query/key/value/proj_attn`` and diffusers' ``to_q/to_k/to_v/to_out.0``) and the
whisper file's ``model.`` prefix are accepted. Every missing, unexpected or mis-shaped
entry is reported at once, in one :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lipsync.checkpoints import check_entries, read_torch_file
from lipsync.errors import CheckpointError

UNET = ("musetalkV15", "unet.pth")
UNET_CONFIG = ("musetalkV15", "musetalk.json")
VAE_DIR, WHISPER_DIR = "sd-vae", "whisper"
_VAE_OLD_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


@dataclass(frozen=True)
class ModelFiles:
    """The files of one models folder, found (not yet read)."""

    unet: Path
    unet_config: Path
    vae_weights: Path
    vae_config: Path
    whisper_weights: Path
    whisper_config: Path
    whisper_preprocessor: Path

    @classmethod
    def find(cls, root: str | Path) -> ModelFiles:
        root = Path(root)
        if not root.is_dir():
            raise CheckpointError("the MuseTalk models folder does not exist (see scripts/fetch-models musetalk)",
                                  path=root)

        def one(*names: str) -> Path:
            for name in names:
                if (root / name).is_file():
                    return root / name
            raise CheckpointError("missing: download the MuseTalk 1.5 files into this folder "
                                  "(scripts/fetch-models musetalk)", path=root / names[0])
        return cls(
            unet=one("/".join(UNET)), unet_config=one("/".join(UNET_CONFIG)),
            vae_weights=one(f"{VAE_DIR}/diffusion_pytorch_model.safetensors", f"{VAE_DIR}/diffusion_pytorch_model.bin"),
            vae_config=one(f"{VAE_DIR}/config.json"),
            whisper_weights=one(f"{WHISPER_DIR}/model.safetensors", f"{WHISPER_DIR}/pytorch_model.bin"),
            whisper_config=one(f"{WHISPER_DIR}/config.json"),
            whisper_preprocessor=one(f"{WHISPER_DIR}/preprocessor_config.json"),
        )


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"not a readable JSON config: {e}", path=path) from None
    if not isinstance(data, dict):
        raise CheckpointError("the config is not a JSON object", path=path)
    return {k: v for k, v in data.items() if not k.startswith("_")}


def read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.stat().st_size:
            raise CheckpointError("the file is empty (0 bytes): the download did not complete", path=path)
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"not a readable safetensors file (truncated or corrupt: {e})", path=path) from None
    obj = read_torch_file(path, what="MuseTalk")
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


def whisper_encoder_state(raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's entries (``encoder.``-relative names); decoder and tied head dropped."""
    out = {}
    for name, value in raw.items():
        name = name.removeprefix("model.")
        if name.startswith("encoder."):
            out[name.removeprefix("encoder.")] = value
    return out


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, *, what: str) -> None:
    """Check ``state`` against ``module`` (every problem at once), then load it strictly."""
    expected = OrderedDict((k, (tuple(v.shape), v.dtype)) for k, v in module.state_dict().items())
    check_entries(state, expected, path, what=what)
    module.load_state_dict({k: state[k].to(expected[k][1]) for k in expected}, strict=True)
