"""The runtime code imports only what a production install provides.

pyproject.toml declares every dependency: the runtime ones, and extras for the musetalk
engine (musetalk) and for tests and benchmarks (dev). A module of daemon/ or lipsync/
importing a package that only the dev extra brings in works in the test suite and breaks
on a real server, so this test maps every third-party import to its distribution and
checks it is declared for the runtime (or for the engine that imports it).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("daemon", "lipsync")


def _declared(*extras: str) -> set[str]:
    """Distribution names pyproject.toml declares: the runtime ones, plus ``extras``."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return {_normalize(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0]) for line in lines}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _module_owners() -> dict[str, set[str]]:
    """Top-level module name -> distributions whose installed files provide it.

    Built from the installed files themselves: some wheels (dlib-bin) declare only part
    of what they install in top_level.txt.
    """
    owners: dict[str, set[str]] = {}
    for dist in distributions():
        for f in dist.files or ():
            top = f.parts[0]
            if top.endswith((".dist-info", ".data")) or top in ("..", "__pycache__"):
                continue
            owners.setdefault(top.removesuffix(".py"), set()).add(_normalize(dist.metadata["Name"]))
    return owners


def _third_party_imports() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for package in RUNTIME_PACKAGES:
        for source in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(source.read_text(), filename=str(source))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in sys.stdlib_module_names or top in RUNTIME_PACKAGES or top == "__future__":
                        continue
                    found.setdefault(top, []).append(str(source.relative_to(ROOT)))
    return found


def test_every_runtime_import_is_a_runtime_requirement():
    runtime, engine = _declared(), _declared("musetalk")
    owners = _module_owners()
    missing = []
    for module, files in sorted(_third_party_imports().items()):
        dists = owners.get(module, {module})
        # the diffusion engines' modules (musetalk, latentsync, the files they share) may use
        # their extra; everything else the runtime's
        allowed = engine if all(any(k in f for k in ("musetalk", "latentsync", "diffusion_files")) for f in files) \
            else runtime
        if not dists & allowed:
            missing.append(f"{module} (from {', '.join(sorted(dists))}) imported by {files[0]}")
    assert not missing, "runtime imports not declared in pyproject.toml:\n" + "\n".join(missing)
    assert not (ROOT / "requirements.txt").exists()  # one place declares dependencies


def test_setup_installs_the_pinned_torch_before_anything_else():
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "torch==2.13.0" in setup
    assert setup.index('"$TORCH_SPEC"') < setup.index('-e ".[$extras]"')
    assert "torch" in _declared()  # declared, and satisfied by the build installed first


def test_a_dev_install_satisfies_the_runtime_check_so_demo_and_test_never_reinstall():
    # scripts/test ran `scripts/setup --dev` before this suite; scripts/demo runs `scripts/setup`
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPSYNCD_")}
    first = subprocess.run(["scripts/setup", "--dev"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=900)  # a no-op after scripts/test, an install after a runtime-only setup
    assert first.returncode == 0, first.stderr
    for args in (["scripts/setup"], ["scripts/setup", "--dev"], ["scripts/setup"]):
        r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert "installing" not in r.stderr, (args, r.stderr)
