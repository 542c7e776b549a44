"""The ``warp`` engine's speed as users meet it: whole ``lipsyncd render`` processes.

    python bench/warp_speed.py [--pairs 5] [--seconds 35] [--size 1280x720] [--template-seconds 8]
                               [--out bench/results/warp_speed.json]

Each run is a fresh ``lipsyncd render`` process (interpreter start, imports, the landmark
model, probing, the face analysis or its cache, the audio features, decode, engine, x264
encode), timed from outside, with its peak resident memory taken from the kernel
(``os.wait4``). The kinds alternate, pair after pair -- warp, passthrough, warp,
passthrough, ... -- so that a busy spell on a shared machine hits both alike, and the
figures are the **medians** of the runs of each kind, not the fastest:

* ``warm``: warp with the template's analysis already cached (every job after the first
  that uses a template), against passthrough;
* ``cold``: warp with an empty cache (a template never seen), against passthrough. What
  depends only on the installation stays, as on a user's machine: numba's compiled code
  and the landmark models' fast-loading copies in the user's cache folder
  (:func:`lipsync.cachefile.user_cache_folder`), made by the priming render.

One render of each kind before the rounds is not counted (the warm cache filled, each
kind's one-time costs paid).

The template is bench/warp_bench.py's moving 720p25 presenter (the astronaut, slow pan,
zoom and tilt), the audio ``--seconds`` of the committed espeak-ng speech. Prints the
figures and writes them as JSON; the ratios are the targets' terms (warm and cold over
passthrough, peak memory over passthrough's). Beside the ratio of the medians, each
``*_paired`` figure is the median of each warp run over the passthrough run right after
it: on a shared machine whose load drifts during the bench, the two can differ by 0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.figures import report  # noqa: E402
from bench.warp_bench import make_speech, make_template  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def run(engine: str, audio: Path, template: Path, out: Path, state: Path, *extra: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one ``lipsyncd render`` process (``extra``: more of its flags)."""
    config = state.parent / f"{state.name}.toml"
    config.write_text(f'[paths]\nstate = "{state}"\n')  # the face-analysis cache lives under state/
    command = [sys.executable, "-m", "daemon", "render", str(audio), str(template), "-o", str(out),
               "--engine", engine, "--device", "cpu", "--no-progress", "-c", str(config), *extra]
    return timed_process(command, f"{engine} render")


def timed_process(command: list[str], what: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process, timed from outside; exits on failure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPSYNCD_")}
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{what} failed ({child.returncode}): {child.stderr.read().decode()[-2000:]}")
    child.stderr.close()
    return wall, usage.ru_maxrss / 1024


def paired_ratios(runs: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    """Per warp kind, the median of each run's time over the passthrough run right after it.

    ``runs`` as :func:`main` takes them, round after round: warm, passthrough, cold,
    passthrough. A load that drifts over the minutes of the bench cancels out of each
    ratio, where it only averages out of the medians of each kind.
    """
    after = [t for t, _ in runs["passthrough"]]
    return {kind: statistics.median(t / after[2 * i + offset] for i, (t, _) in enumerate(runs[kind]))
            for kind, offset in (("warm", 0), ("cold", 1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="alternating (warp, passthrough) pairs per kind")
    parser.add_argument("--seconds", type=float, default=35.0, help="speech length")
    parser.add_argument("--size", default="1280x720", help="template WIDTHxHEIGHT")
    parser.add_argument("--template-seconds", type=float, default=8.0, help="template length (ping-pong)")
    parser.add_argument("--out", type=Path, default=RESULTS / "warp_speed.json")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="warp-speed-") as tmp:
        work = Path(tmp)
        template = make_template(work / "template.mp4", width, height, args.template_seconds)
        audio = make_speech(work / "speech.wav", args.seconds)
        warm_state, cold_state = work / "warm-state", work / "cold-state"
        # not counted: the warm cache filled, and each kind's one-time costs paid alike (in a
        # new checkout, the bytecode of the modules only it imports; files first read from disk)
        run("warp", audio, template, work / "prime.mp4", warm_state)
        run("passthrough", audio, template, work / "plain.mp4", work / "plain-state")
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("warm", "cold", "passthrough")}
        load = os.getloadavg()[0]
        for _ in range(max(1, args.pairs)):
            runs["warm"].append(run("warp", audio, template, work / "warm.mp4", warm_state))
            runs["passthrough"].append(run("passthrough", audio, template, work / "plain.mp4", work / "plain-state"))
            shutil.rmtree(cold_state, ignore_errors=True)
            runs["cold"].append(run("warp", audio, template, work / "cold.mp4", cold_state))
            runs["passthrough"].append(run("passthrough", audio, template, work / "plain.mp4", work / "plain-state"))
    median = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
    paired = paired_ratios(runs)
    memory = {k: statistics.median(m for _, m in v) for k, v in runs.items()}
    figures = {
        "size": f"{width}x{height}", "audio_seconds": args.seconds, "pairs": args.pairs,
        "timing": "medians of whole `lipsyncd render` processes, warp and passthrough alternating",
        "load_average_at_start": round(load, 2), "cpu_count": os.cpu_count(),
        **{f"{k}_s": round(v, 2) for k, v in median.items()},
        "warm_over_passthrough": round(median["warm"] / median["passthrough"], 3),
        "cold_over_passthrough": round(median["cold"] / median["passthrough"], 3),
        "warm_over_passthrough_paired": round(paired["warm"], 3),
        "cold_over_passthrough_paired": round(paired["cold"], 3),
        **{f"peak_rss_{k}_mb": round(v, 1) for k, v in memory.items()},
        "warm_memory_over_passthrough": round(memory["warm"] / memory["passthrough"], 3),
        "cold_memory_over_passthrough": round(memory["cold"] / memory["passthrough"], 3),
        "all_runs_s": {k: [round(t, 2) for t, _ in v] for k, v in runs.items()},
        "targets (issue 28)": {"warm_over_passthrough": "<= 1.11", "cold_over_passthrough": "<= 1.25",
                               "memory_over_passthrough": "<= 1.5"},
    }
    report(figures, args.out)


if __name__ == "__main__":
    main()
