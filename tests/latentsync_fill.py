"""Deterministic LatentSync 1.6 weights, and models folders in the published layout built from them.

The goldens in ``tests/data/latentsync/`` were computed by the reference code (see the
README there) with every state-dict entry set by the MuseTalk compatibility data's fill
rule (:mod:`tests.musetalk_fill`: splitmix64 counters seeded by the CRC-32 of the entry's
name), except the temporal layers' position tables (``pos_encoder.pe``), which keep their
sinusoids as in a trained checkpoint.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from tests.musetalk_fill import entry_value
from tests.musetalk_fill import manifest as musetalk_manifest
from tests.musetalk_fill import state as musetalk_state

DATA = Path(__file__).resolve().parent / "data" / "latentsync"
TINY_RESOLUTION = 128  # the tiny configuration works on 128x128 faces (16x16 latents)


def manifest(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@lru_cache(maxsize=None)
def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / name) as data:
        return {k: data[k] for k in data.files}


def unet_state(doc: dict) -> dict[str, torch.Tensor]:
    from lipsync.engines.latentsync.unet import position_table

    out = {}
    for name, shape, _dtype in doc["entries"]:
        if name.endswith("pos_encoder.pe"):
            out[name] = position_table(shape[1], shape[2])
        else:
            out[name] = torch.from_numpy(entry_value(name, tuple(shape)))
    return out


def fill_in_place(module: torch.nn.Module, doc: dict) -> None:
    """Set ``module``'s entries by the rule one at a time (the full UNet is 5 GB: no second copy)."""
    from lipsync.engines.latentsync.unet import position_table

    current = module.state_dict()
    assert {n for n, _s, _d in doc["entries"]} == set(current)
    with torch.no_grad():
        for name, shape, _dtype in doc["entries"]:
            value = position_table(shape[1], shape[2]) if name.endswith("pos_encoder.pe") \
                else torch.from_numpy(entry_value(name, tuple(shape)))
            current[name].copy_(value)


def whisper_checkpoint() -> dict:
    doc = manifest("whisper_manifest.json")
    return {"dims": dict(doc["config"]),
            "model_state_dict": {n: torch.from_numpy(entry_value(n, tuple(s))) for n, s, _ in doc["entries"]}}


def tiny_config() -> dict:
    return dict(manifest("unet_tiny_manifest.json")["config"], sample_size=TINY_RESOLUTION // 8)


# a VAE of sd-vae-ft-mse's shape (4 blocks, 8x down, 4 latent channels) with narrow layers:
# the published one costs about a second per 128x128 image on two cores, this one a few ms;
# the published VAE is proven against the goldens, this one only makes engine tests quick
TINY_VAE = {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
            "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 32, "act_fn": "silu",
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "sample_size": 128}


def write_models_folder(root: Path, *, unet: str = "tiny", vae: str = "published") -> Path:
    """A models folder laid out as published: ``latentsync_unet.pt`` ({"state_dict", "global_step"}),
    ``whisper/tiny.pt`` (OpenAI format, decoder included), ``sd-vae/`` (the published file's
    old attention names; ``vae="tiny"``: :data:`TINY_VAE` as safetensors); the tiny UNet also
    writes its ``unet.json``."""
    doc = manifest(f"unet_{unet}_manifest.json")
    root.mkdir(parents=True)
    torch.save({"state_dict": unet_state(doc), "global_step": 0}, root / "latentsync_unet.pt")
    if unet == "tiny":
        (root / "unet.json").write_text(json.dumps(tiny_config()))
    (root / "whisper").mkdir()
    torch.save(whisper_checkpoint(), root / "whisper" / "tiny.pt")
    (root / "sd-vae").mkdir()
    if vae == "tiny":
        from safetensors.torch import save_file

        from lipsync.engines.diffusion_files import build_vae

        names = build_vae({k: v for k, v in TINY_VAE.items() if not k.startswith("_")}).state_dict()
        save_file({n: torch.from_numpy(entry_value(n, tuple(v.shape))) for n, v in names.items()},
                  str(root / "sd-vae" / "diffusion_pytorch_model.safetensors"))
        (root / "sd-vae" / "config.json").write_text(json.dumps(TINY_VAE))
        return root
    vae_doc = musetalk_manifest("vae_manifest.json")
    renames = vae_doc["file_key_renames"]
    torch.save({renames.get(k, k): v for k, v in musetalk_state(vae_doc).items()},
               root / "sd-vae" / "diffusion_pytorch_model.bin")
    (root / "sd-vae" / "config.json").write_text(json.dumps(vae_doc["config"]))
    return root


def long_audio() -> np.ndarray:
    """The goldens' 31-s rule-made sound (int16): crosses whisper's 30-s segment."""
    from tests.musetalk_fill import input_value

    n = 31 * 16000
    wave = input_value(4001, (n,)) * 2000 * np.sin(np.arange(n) * 2 * np.pi * 3 / 16000) ** 2
    return np.round(wave).astype(np.int16)
