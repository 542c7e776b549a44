"""Checkpoints load in every published layout; anything else fails with one clear error."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync.engines.wav2lip.checkpoint import load_generator, load_state_dict
from lipsync.errors import CheckpointError
from tests import wav2lip_fill


def _published_layout(state: dict) -> dict:
    # what the training script saved: weights plus optimizer state and counters
    return {"state_dict": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.5, 0.999),
            "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "params": list(range(4))}]},
            "global_step": 253000, "global_epoch": 120}


def _prefixed(state: dict) -> OrderedDict:
    return OrderedDict((f"module.{k}", v) for k, v in state.items())


def _golden_output(model) -> np.ndarray:
    golden = np.load(wav2lip_fill.GENERATOR_GOLDEN)
    with torch.no_grad():
        out = model(torch.from_numpy(golden["audio"]), torch.from_numpy(golden["face"])).numpy()
    return float(np.abs(out - golden["output"]).max())


@pytest.mark.parametrize("layout", ["published", "published_module_prefix", "bare", "bare_module_prefix",
                                    "published_legacy_format"])
def test_published_and_resaved_layouts_load(tmp_path, layout):
    state = wav2lip_fill.deterministic_state_dict()
    if "module_prefix" in layout:
        state = _prefixed(state)
    obj = _published_layout(state) if layout.startswith("published") else state
    path = tmp_path / "wav2lip_gan.pth"
    # the published files predate the zip format; both must load
    torch.save(obj, path, _use_new_zipfile_serialization="legacy" not in layout)
    model = load_generator(path)
    assert not model.training
    assert _golden_output(model) < 1e-4


def test_half_precision_checkpoint_is_widened(tmp_path):
    state = OrderedDict((k, v.half() if v.is_floating_point() else v)
                        for k, v in wav2lip_fill.deterministic_state_dict().items())
    torch.save({"state_dict": state}, tmp_path / "half.pth")
    loaded = load_state_dict(tmp_path / "half.pth")
    assert all(v.dtype == torch.float32 for k, v in loaded.items() if "num_batches" not in k)


class _RunsAShellCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_without_running(tmp_path, legacy):
    marker = tmp_path / "pwned"
    state = OrderedDict(list(wav2lip_fill.deterministic_state_dict().items())[:3])
    path = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": state, "optimizer": _RunsAShellCommand(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    assert not marker.exists(), "the checkpoint's payload ran"
    assert str(path) in str(info.value)
    assert "refused" in str(info.value) and "system" in str(info.value)
    assert info.value.code == "bad_checkpoint" and info.value.permanent


@pytest.fixture(scope="module")
def published_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "full.pth"
    torch.save(_published_layout(wav2lip_fill.deterministic_state_dict()), path)
    return path.read_bytes()


@pytest.mark.parametrize("fraction", [0.0001, 0.5, 0.999])
def test_truncated_download_names_the_file(tmp_path, published_bytes, fraction):
    path = tmp_path / "wav2lip_gan.pth"
    path.write_bytes(published_bytes[: int(len(published_bytes) * fraction)])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_generator(path)
    assert str(info.value).startswith(str(path))


def test_missing_file(tmp_path):
    path = tmp_path / "models" / "wav2lip_gan.pth"
    with pytest.raises(CheckpointError, match="not found") as info:
        load_generator(path)
    assert info.value.path == str(path)


def test_empty_file(tmp_path):
    path = tmp_path / "wav2lip.pth"
    path.touch()
    with pytest.raises(CheckpointError, match="empty"):
        load_generator(path)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_generator(tmp_path)


def test_other_architecture_lists_what_is_wrong(tmp_path):
    # e.g. the sync expert someone downloaded by mistake: an encoder pair, no decoder
    other = torch.nn.Sequential(torch.nn.Conv2d(15, 32, 7), torch.nn.BatchNorm2d(32), torch.nn.Linear(4, 1))
    path = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": other.state_dict(), "global_step": 1}, path)
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    text = str(info.value)
    assert text.startswith(str(path))
    assert "352 of 352 entries missing" in text and "face_encoder_blocks.0.0.conv_block.0.weight" in text
    assert "unexpected" in text and "0.weight" in text
    assert "discriminator or SyncNet" in text


def test_mis_shaped_and_extra_entries_are_listed(tmp_path):
    state = wav2lip_fill.deterministic_state_dict()
    state["output_block.1.weight"] = torch.zeros(4, 32, 1, 1)  # a 4-channel output head
    state["extra_head.weight"] = torch.zeros(1)
    del state["audio_encoder.0.conv_block.0.bias"]
    path = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    text = str(info.value)
    assert "1 of 352 entries missing (audio_encoder.0.conv_block.0.bias)" in text
    assert "1 unexpected (extra_head.weight)" in text
    assert "output_block.1.weight has shape (4, 32, 1, 1), expected (3, 32, 1, 1)" in text


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "wav2lip.pth"
    torch.save({"model_name": "wav2lip", "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        load_generator(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="holds list"):
        load_generator(path)


def test_non_finite_weights_are_rejected(tmp_path):
    state = wav2lip_fill.deterministic_state_dict()
    broken = state["face_decoder_blocks.3.1.conv_block.0.weight"].clone()
    broken[0, 0, 0, 0] = float("nan")
    state["face_decoder_blocks.3.1.conv_block.0.weight"] = broken
    torch.save(state, tmp_path / "wav2lip.pth")
    with pytest.raises(CheckpointError, match="NaN"):
        load_generator(tmp_path / "wav2lip.pth")


def test_arbitrary_bytes(tmp_path):
    path = tmp_path / "wav2lip.pth"
    path.write_bytes(b"<html><body>404 Not Found</body></html>\n" * 20)  # a failed download saved as the file
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as info:
        load_generator(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- scripts/fetch-models

FETCH = Path(__file__).resolve().parent.parent / "scripts" / "fetch-models"


@pytest.fixture
def web_folder(tmp_path):
    """A real HTTP server on localhost serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _fetch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(FETCH), *args], capture_output=True, text=True, timeout=120)


def test_fetch_models_downloads_verifies_and_renames(web_folder, tmp_path, published_bytes):
    root, base = web_folder
    (root / "wav2lip_gan.pth").write_bytes(published_bytes)
    models = tmp_path / "models"
    digest = hashlib.sha256(published_bytes).hexdigest()
    proc = _fetch(f"{base}/wav2lip_gan.pth", "--sha256", digest, "--dir", str(models))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in models.iterdir()] == ["wav2lip_gan.pth"]  # no temporary file left
    assert proc.stdout.strip() == str((models / "wav2lip_gan.pth").resolve())
    assert "non-commercial" in proc.stderr
    load_generator(models / "wav2lip_gan.pth")


def test_fetch_models_refuses_wrong_hash_and_wrong_files(web_folder, tmp_path, published_bytes):
    root, base = web_folder
    (root / "wav2lip_gan.pth").write_bytes(published_bytes)
    (root / "half.pth").write_bytes(published_bytes[: len(published_bytes) // 2])
    models = tmp_path / "models"
    proc = _fetch(f"{base}/wav2lip_gan.pth", "--sha256", "0" * 64, "--dir", str(models))
    assert proc.returncode != 0 and "SHA-256 mismatch" in proc.stderr
    proc = _fetch(f"{base}/half.pth", "--dir", str(models))
    assert proc.returncode != 0 and "not a usable Wav2Lip generator checkpoint" in proc.stderr
    proc = _fetch(f"{base}/", "--dir", str(models))  # a directory listing: a web page
    assert proc.returncode != 0 and "web page" in proc.stderr
    assert list(models.iterdir()) == []
