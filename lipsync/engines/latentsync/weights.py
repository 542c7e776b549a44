"""The LatentSync 1.6 files: where they are, how they are read, what must be in them.

Layout of a models folder (what ``scripts/fetch-models latentsync`` downloads)::

    latentsync_unet.pt          the UNet checkpoint ({"state_dict": ...}, ~5 GB; ByteDance/LatentSync-1.6)
    whisper/tiny.pt             OpenAI's whisper-tiny checkpoint ({"dims", "model_state_dict"})
    sd-vae/config.json          AutoencoderKL (stabilityai/sd-vae-ft-mse), diffusers format
    sd-vae/diffusion_pytorch_model.safetensors | .bin
    unet.json                   optional: the UNet's model config; without it, the published
                                stage2_512 configuration (the one 1.5 and 1.6 share)

Everything is read from local files. Pickles go through ``torch.load(weights_only=True)``
(tensors and plain containers only); every missing, unexpected or mis-shaped entry is
reported at once in one :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lipsync.checkpoints import read_torch_file
from lipsync.engines.diffusion_files import VAE_DIR, file_finder, read_config
from lipsync.errors import CheckpointError

UNET_FILE = "latentsync_unet.pt"
WHISPER_FILE = "whisper/tiny.pt"
UNET_CONFIG_FILE = "unet.json"
FETCH = "latentsync"
UNET_WHAT = "LatentSync UNet"
WHISPER_WHAT = "whisper-tiny (OpenAI format)"
# the published sizes: a unet.json departing from these, beside weights that disagree, is to blame
UNET_SIZES = {"in_channels": 13, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
              "cross_attention_dim": 384, "layers_per_block": 2, "attention_head_dim": 8}
WHISPER_DIMS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")


@dataclass(frozen=True)
class ModelFiles:
    """The files of one models folder, found (not yet read)."""

    unet: Path
    unet_config: Path | None
    whisper: Path
    vae_weights: Path
    vae_config: Path

    @classmethod
    def find(cls, root: str | Path) -> ModelFiles:
        root = Path(root)
        one = file_finder(root, "LatentSync 1.6", FETCH)
        config = root / UNET_CONFIG_FILE
        return cls(unet=one(UNET_FILE), unet_config=config if config.is_file() else None, whisper=one(WHISPER_FILE),
                   vae_weights=one(f"{VAE_DIR}/diffusion_pytorch_model.safetensors",
                                   f"{VAE_DIR}/diffusion_pytorch_model.bin"),
                   vae_config=one(f"{VAE_DIR}/config.json"))


def unet_config(files: ModelFiles) -> dict[str, Any]:
    """The UNet's model config: ``unet.json`` where there is one, else the published one."""
    from lipsync.engines.latentsync.unet import PUBLISHED_CONFIG

    return read_config(files.unet_config) if files.unet_config else dict(PUBLISHED_CONFIG)


def read_whisper(path: Path) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """(dims, encoder entries without the ``encoder.`` prefix) of an OpenAI whisper checkpoint."""
    obj = read_torch_file(path, what="whisper-tiny")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("dims"), Mapping) \
            or not isinstance(obj.get("model_state_dict"), Mapping):
        raise CheckpointError("not an OpenAI whisper checkpoint (expected 'dims' and 'model_state_dict'; "
                              "LatentSync uses whisper/tiny.pt as published with it)", path=path)
    dims = dict(obj["dims"])
    bad = [k for k in WHISPER_DIMS if not isinstance(dims.get(k), int) or dims[k] <= 0]
    if bad:
        raise CheckpointError(f"the checkpoint's dims lack or mis-state {', '.join(bad)}", path=path)
    state = obj["model_state_dict"]
    encoder = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    if not all(isinstance(v, torch.Tensor) for v in encoder.values()):
        raise CheckpointError("the encoder entries are not all tensors", path=path)
    return dims, encoder


def with_position_tables(state: Mapping[str, torch.Tensor], module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state`` completed by the temporal layers' position tables where a file leaves them out.

    The tables are fixed sinusoids (``pos_encoder.pe``), saved with the training state;
    a file without them (saved with non-persistent buffers) still describes the network."""
    out = dict(state)
    for name, value in module.state_dict().items():
        if name.endswith("pos_encoder.pe") and name not in out:
            out[name] = value
    return out
