"""Turns the configured device ("auto", "cpu", "cuda", "cuda:N") into a torch device string."""

from __future__ import annotations

import os
import re
import sys

from lipsync.errors import EngineUnavailableError

_SPEC = re.compile(r"^(auto|cpu|cuda(?::(\d+))?)$")


class DeviceUnavailableError(EngineUnavailableError):
    """The configured device does not exist on this machine (a setting to fix, not a retry)."""

    code = "device_unavailable"


def resolve_device(spec: str) -> str:
    """"auto" -> "cuda:0" when CUDA works, else "cpu"; "cuda" -> "cuda:0"; "cuda:N" checked to exist."""
    text = (spec or "auto").strip().lower()
    m = _SPEC.match(text)
    if m is None:
        raise DeviceUnavailableError(f"unknown device {spec!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if text == "cpu":
        return "cpu"  # without importing torch: CPU-only engines stay light
    count = _cuda_device_count()
    if text == "auto":
        return "cuda:0" if count else "cpu"
    number = int(m.group(2) or 0)
    if count == 0:
        raise DeviceUnavailableError(f"device {spec!r} requested but CUDA is not available here "
                                     "(no NVIDIA GPU or driver, or a CPU-only torch); use 'auto' or 'cpu'")
    if number >= count:
        raise DeviceUnavailableError(f"device {spec!r} requested but only {count} CUDA device(s) exist "
                                     f"(cuda:0..cuda:{count - 1})")
    return f"cuda:{number}"


# Device nodes a CUDA driver creates (native Linux, and WSL2's /dev/dxg). Without any of
# them CUDA cannot work, and "auto" answers "cpu" without importing torch (about 200 MB
# and a second, for renders whose engine never touches it).
_DRIVER_NODES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg")


def cuda_device_count() -> int:
    """How many CUDA devices torch can use here (0 without a driver, without importing torch)."""
    return _cuda_device_count()


def _cuda_device_count() -> int:
    if "torch" not in sys.modules and not any(os.path.exists(node) for node in _DRIVER_NODES):
        return 0
    try:
        import torch  # on use: resolving "cpu" must not load torch
    except ImportError:
        return 0
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except RuntimeError:  # a broken driver reports itself by raising
        return 0
