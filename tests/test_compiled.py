"""Compiled code is kept per version of the package's sources: an installation updated in
place never runs a compiled caller with the old code of a function it calls."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The drawn mouth interior at one pixel: numba compiles interior_colour with the smoothstep
# of lipsync/engines/warp_samples.py (another file) inside it.
INTERIOR = ("import numpy as np\n"
            "from lipsync.engines.warp_interior import interior_colour\n"
            "palette = np.array([[10.0, 5, 5], [60, 30, 30], [150, 60, 60], [230, 230, 220]])\n"
            "print(interior_colour(0.3, 0.7, 12.0, 60.0, 20.0, palette, np.zeros((1, 2, 2, 4), np.float32), 0, 0.0,\n"
            "                      np.ones(3)))\n")


def run_from(root: Path, cache: Path, code: str) -> str:
    """What ``code`` prints in a fresh interpreter that imports the package under ``root``."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    env.pop("NUMBA_CACHE_DIR", None)
    env.pop("CACHE_DIRECTORY", None)
    run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip()


def test_a_function_called_from_compiled_code_is_never_run_stale_after_an_update(tmp_path):
    """The way ``git pull`` updates an editable install: only the callee's file changes. numba
    would reuse the caller's cached code (it checks the caller's own file), with the old
    callee compiled into it; here the next process compiles both again."""
    root = tmp_path / "checkout"
    shutil.copytree(REPO / "lipsync", root / "lipsync", ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    before = run_from(root, cache, INTERIOR)
    assert run_from(root, cache, INTERIOR) == before  # the same sources: the same code, from the cache
    samples = root / "lipsync" / "engines" / "warp_samples.py"
    source = samples.read_text()
    cubic = "    return t * t * (3.0 - 2.0 * t)\n"
    assert cubic in source
    samples.write_text(source.replace(cubic, "    return t  # a linear ramp instead\n"))
    after = run_from(root, cache, INTERIOR)
    assert after != before, after
    folders = sorted(p.name for p in (cache / "lipsyncd").iterdir())
    assert len(folders) == 2 and all(name.startswith("compiled-") for name in folders), folders
    assert not list((root / "lipsync").rglob("*.nbi"))  # nothing cached beside the sources


def test_compiled_code_goes_where_numba_cache_dir_says(tmp_path):
    """A container sets NUMBA_CACHE_DIR (its package folder is read-only): the code goes
    there, still under the sources' digest."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    code = ("from lipsync.compiled import compiled_code_folder, sources_digest\n"
            "print(compiled_code_folder(), sources_digest())")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    folder, digest = run.stdout.split()
    assert Path(folder) == tmp_path / "numba" / f"compiled-{digest}" and Path(folder).is_dir()
