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

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lipsync.engines.diffusion_files import VAE_DIR, VAE_SIZES, VAE_WHAT, read_config, read_state, vae_state
from lipsync.engines.diffusion_files import file_finder
from lipsync.engines.diffusion_files import load_into as _load_into

__all__ = ["ModelFiles", "read_config", "read_state", "vae_state", "whisper_encoder_state", "load_into"]

UNET = ("musetalkV15", "unet.pth")
UNET_CONFIG = ("musetalkV15", "musetalk.json")
WHISPER_DIR = "whisper"
# The values of the published configs that decide the networks' sizes: a config that
# departs from them, next to weights whose sizes disagree, is what to blame
PUBLISHED_SIZES: dict[str, dict[str, Any]] = {
    "MuseTalk 1.5 UNet": {"in_channels": 8, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
                          "cross_attention_dim": 384, "layers_per_block": 2, "attention_head_dim": 8},
    VAE_WHAT: VAE_SIZES,
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
        one = file_finder(Path(root), "MuseTalk 1.5", "musetalk")
        return cls(
            unet=one("/".join(UNET)), unet_config=one("/".join(UNET_CONFIG)),
            vae_weights=one(f"{VAE_DIR}/diffusion_pytorch_model.bin", f"{VAE_DIR}/diffusion_pytorch_model.safetensors"),
            vae_config=one(f"{VAE_DIR}/config.json"),
            whisper_weights=one(f"{WHISPER_DIR}/pytorch_model.bin", f"{WHISPER_DIR}/model.safetensors"),
            whisper_config=one(f"{WHISPER_DIR}/config.json"),
            whisper_preprocessor=one(f"{WHISPER_DIR}/preprocessor_config.json"),
        )


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
    """:func:`lipsync.engines.diffusion_files.load_into` with MuseTalk's published sizes."""
    _load_into(module, state, path, what=what, config=config, published=PUBLISHED_SIZES.get(what), fetch="musetalk")
