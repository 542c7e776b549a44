"""Deterministic Wav2Lip weights and inputs, per the compatibility data's fill spec.

The golden outputs in ``tests/data/wav2lip/`` were produced by the reference generator with
every state_dict entry filled by this rule, so a generator that reproduces them with the
same fill computes the same function as the published network. The rule, restated:

* a counter-based generator: ``unit(seed, n)[i] = splitmix64(seed·2³² + i) >> 11, / 2⁵³``
  (uniform in [0, 1), 53 bits), with 64-bit wrap-around arithmetic;
* an entry's seed is the CRC-32 of its name without the ``module.`` prefix;
* ``num_batches_tracked`` → 0; ``running_var`` → 0.5 + u; ``running_mean`` → 0.2·(u − 0.5);
  a BatchNorm weight (1-D, name contains ``conv_block.1.weight``) → 0.5 + u; any other 1-D
  entry → 0.2·(u − 0.5); entries of rank ≥ 2 → (2u − 1)·√(3 / fan_in) with
  fan_in = numel / shape[0] (also for transposed convolutions);
* inputs: audio = 8u − 4 with seed 1001, face = u with seed 1002.

Values are computed in float64 and stored as float32 (int64 for the counters).
"""

from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parent / "data" / "wav2lip"
MANIFEST = DATA / "manifest.json"
GENERATOR_GOLDEN = DATA / "generator_golden.npz"
MEL_GOLDEN = DATA / "mel_golden.npz"

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _splitmix64(counter: np.ndarray) -> np.ndarray:
    # uint64 multiplication wraps modulo 2**64, which is exactly what the spec asks for
    with np.errstate(over="ignore"):
        z = counter + _GOLDEN_GAMMA
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def uniform(seed: int, count: int) -> np.ndarray:
    """``count`` float64 values in [0, 1), the spec's ``unit(seed, count)``."""
    base = np.uint64((seed << 32) & _MASK64)
    counters = base + np.arange(count, dtype=np.uint64)
    return (_splitmix64(counters) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def entry_value(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The spec's value for one state_dict entry."""
    name = name.removeprefix("module.")
    if name.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    count = math.prod(shape)
    u = uniform(zlib.crc32(name.encode()), count).reshape(shape)
    if name.endswith("running_var"):
        value = 0.5 + u
    elif name.endswith("running_mean"):
        value = 0.2 * (u - 0.5)
    elif len(shape) == 1 and "conv_block.1.weight" in name:
        value = 0.5 + u
    elif len(shape) <= 1:
        value = 0.2 * (u - 0.5)
    else:
        fan_in = count / shape[0]
        value = (2.0 * u - 1.0) * math.sqrt(3.0 / fan_in)
    return value.astype(np.float32)


def manifest_entries() -> list[tuple[str, tuple[int, ...], str]]:
    doc = json.loads(MANIFEST.read_text())
    return [(name, tuple(shape), dtype) for name, shape, dtype in doc["entries"]]


@lru_cache(maxsize=1)
def _filled() -> "tuple[tuple[str, torch.Tensor], ...]":
    return tuple((name, torch.from_numpy(entry_value(name, shape))) for name, shape, _ in manifest_entries())


def deterministic_state_dict() -> "OrderedDict[str, torch.Tensor]":
    """Every manifest entry filled by the spec, in manifest order.

    Computed once per test session; the tensors are shared, so callers must not modify
    them in place (replace an entry instead).
    """
    return OrderedDict(_filled())


def deterministic_inputs(batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(audio (B,1,80,16), face (B,6,96,96)) float32, as the spec defines them."""
    audio = (8.0 * uniform(1001, batch * 80 * 16) - 4.0).reshape(batch, 1, 80, 16)
    face = uniform(1002, batch * 6 * 96 * 96).reshape(batch, 6, 96, 96)
    return audio.astype(np.float32), face.astype(np.float32)
