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

from lipsync.checkpoints import check_entries, listing, read_torch_file
from lipsync.errors import CheckpointError

UNET = ("musetalkV15", "unet.pth")
UNET_CONFIG = ("musetalkV15", "musetalk.json")
VAE_DIR, WHISPER_DIR = "sd-vae", "whisper"
_VAE_OLD_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
# The values of the published configs that decide the networks' sizes: a config that
# departs from them, next to weights whose sizes disagree, is what to blame
PUBLISHED_SIZES: dict[str, dict[str, Any]] = {
    "MuseTalk 1.5 UNet": {"in_channels": 8, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
                          "cross_attention_dim": 384, "layers_per_block": 2, "attention_head_dim": 8},
    "sd-vae-ft-mse VAE": {"in_channels": 3, "out_channels": 3, "latent_channels": 4,
                          "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2},
    "whisper-tiny": {"num_mel_bins": 80, "d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6,
                     "encoder_ffn_dim": 1536, "max_source_positions": 1500},
}


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

        def one(fetched: str, *alternatives: str) -> Path:
            """``fetched`` (what scripts/fetch-models downloads) or an accepted alternative."""
            for name in (*alternatives, fetched):
                if (root / name).is_file():
                    return root / name
            also = f" (or {', '.join(a.rsplit('/', 1)[-1] for a in alternatives)})" if alternatives else ""
            raise CheckpointError(f"missing{also}: download the MuseTalk 1.5 files into this folder "
                                  "(scripts/fetch-models musetalk)", path=root / fetched)
        return cls(
            unet=one("/".join(UNET)), unet_config=one("/".join(UNET_CONFIG)),
            vae_weights=one(f"{VAE_DIR}/diffusion_pytorch_model.bin", f"{VAE_DIR}/diffusion_pytorch_model.safetensors"),
            vae_config=one(f"{VAE_DIR}/config.json"),
            whisper_weights=one(f"{WHISPER_DIR}/pytorch_model.bin", f"{WHISPER_DIR}/model.safetensors"),
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


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, *, what: str,
              config: Path | None = None) -> None:
    """Check ``state`` against ``module`` (every problem at once), then load it strictly.

    ``module`` was built from ``config``: when every entry is there by name and only shapes
    differ, the config and the weights disagree about the model's sizes, and the error
    names the config -- the small file that was edited -- rather than a good multi-GB
    download that would be fetched again for nothing."""
    expected = OrderedDict((k, (tuple(v.shape), v.dtype)) for k, v in module.state_dict().items())
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != expected[k][0]]
    edited = _departures(config, what) if config is not None and shapes else []
    if edited:
        raise CheckpointError(
            f"the config departs from the published {what} ({listing(edited)}) and so disagrees with the weights "
            f"in {path.name} ({len(shapes)} entries differ in size, e.g. {shapes[0]}: "
            f"{tuple(state[shapes[0]].shape)} in the file, {expected[shapes[0]][0]} by the config); restore the "
            f"published {config.name} (scripts/fetch-models musetalk), the weights need no new download",
            path=config)
    check_entries(state, expected, path, what=what)
    module.load_state_dict({k: state[k].to(expected[k][1]) for k in expected}, strict=True)


def _departures(config: Path, what: str) -> list[str]:
    """``key: value (published: value)`` for each size-deciding value of ``config`` that is not
    the published one."""
    published = PUBLISHED_SIZES.get(what, {})
    try:
        values = read_config(config)
    except CheckpointError:
        return []
    return [f"{k}: {values[k]} (published: {v})" for k, v in published.items() if k in values and values[k] != v]
