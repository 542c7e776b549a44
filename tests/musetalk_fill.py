"""Deterministic MuseTalk 1.5 weights, per the compatibility data's fill spec, and weight
folders in the published layout built from them.

The goldens in ``tests/data/musetalk/`` were computed by the reference code with every
state-dict entry filled by this rule, so a model that reproduces them with the same fill
computes the published networks' function. The rule, restated (the counter generator is
the one of the wav2lip data, :func:`tests.wav2lip_fill.uniform`):

* an entry's seed is the CRC-32 of its name as the manifest lists it (diffusers' current
  VAE attention names; whisper without the ``model.`` prefix);
* rank >= 2: (2u - 1)·sqrt(3 / fan_in), fan_in = numel / shape[0]; a rank-1 entry named
  ``*.weight`` (the norm scales): 0.9 + 0.2u; every other rank-1 entry: 0.2(u - 0.5);
* inputs: (2u - 1)·sqrt(3) with the seeds the goldens name.

Values are computed in float64 and stored as float32.
"""

from __future__ import annotations

import json
import math
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from tests.wav2lip_fill import uniform

DATA = Path(__file__).resolve().parent / "data" / "musetalk"


def entry_value(name: str, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    u = uniform(zlib.crc32(name.encode()), count).reshape(shape)
    if len(shape) >= 2:
        value = (2.0 * u - 1.0) * math.sqrt(3.0 / (count / shape[0]))
    elif name.endswith(".weight"):
        value = 0.9 + 0.2 * u
    else:
        value = 0.2 * (u - 0.5)
    return value.astype(np.float32)


def close(a, b, tol=1e-4) -> None:
    """Max absolute difference of two arrays (any float types) at most ``tol``."""
    diff = float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())
    assert diff <= tol, diff


def input_value(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return ((2.0 * uniform(seed, math.prod(shape)) - 1.0) * math.sqrt(3.0)).astype(np.float32).reshape(shape)


def manifest(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def config(doc: dict) -> dict:
    return {k: v for k, v in doc["config"].items() if not k.startswith("_")}


def state(doc: dict) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(entry_value(name, tuple(shape))) for name, shape, _dtype in doc["entries"]}


@lru_cache(maxsize=None)
def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / name) as data:
        return {k: data[k] for k in data.files}


def write_published_folder(root: Path, *, unet_manifest: str = "unet_tiny_manifest.json",
                           vae_format: str = "bin") -> Path:
    """A models folder laid out as the authors publish it, every value by the fill rule:
    ``musetalkV15/unet.pth`` + ``musetalk.json``; ``sd-vae/`` (``bin``: the published
    file's old attention names; ``safetensors``: diffusers' current ones); ``whisper/``
    with ``model.``-prefixed keys, the decoder included, and a preprocessor config."""
    unet_doc, vae_doc, whisper_doc = manifest(unet_manifest), manifest("vae_manifest.json"), \
        manifest("whisper_manifest.json")
    (root / "musetalkV15").mkdir(parents=True)
    torch.save(state(unet_doc), root / "musetalkV15" / "unet.pth")
    (root / "musetalkV15" / "musetalk.json").write_text(json.dumps(unet_doc["config"]))
    (root / "sd-vae").mkdir()
    vae = state(vae_doc)
    if vae_format == "bin":
        renames = vae_doc["file_key_renames"]
        torch.save({renames.get(k, k): v for k, v in vae.items()}, root / "sd-vae" / "diffusion_pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(vae, str(root / "sd-vae" / "diffusion_pytorch_model.safetensors"))
    (root / "sd-vae" / "config.json").write_text(json.dumps(vae_doc["config"]))
    (root / "whisper").mkdir()
    torch.save({f"model.{k}": v for k, v in state(whisper_doc).items()}, root / "whisper" / "pytorch_model.bin")
    (root / "whisper" / "config.json").write_text(json.dumps(whisper_doc["config"]))
    (root / "whisper" / "preprocessor_config.json").write_text(json.dumps(whisper_doc["preprocessor_config"]))
    return root
