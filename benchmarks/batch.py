"""Batch executors compared: one 40-run batch timed with the serial, process and Dask
executors, in the same process, each into a fresh result directory.

Run alone: ``.venv/bin/python benchmarks/batch.py [--nodes N] [--reps N]`` (``make bench``
runs it last). Prints wall times and the speed-ups over serial (the goals on a 2-core
machine: process >= 1.8x, issue 8, and >= 1.7x for this 40-run batch, issue 5; Dask
LocalCluster >= 1.6x).
Nothing is asserted: the ratios depend on the machine and on what else runs on it (the
load average is printed beside them). Each executor's time includes its own start-up
(the process pool's forkserver importing hasim, the Dask LocalCluster's workers), since
a user pays it on every ``hasim run``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import hasim
from hasim.batch import run_batch

ROOT = Path(__file__).resolve().parent.parent


def scenarios(nodes: int) -> list[hasim.Scenario]:
    """Two HA modes (local nginx, external HAProxy), master1 crashes at 60 s, 10 minutes."""
    return [hasim.load_scenario(ROOT / "scenarios" / name).with_overrides(
        {"cluster.generate.nodes": nodes}) for name in ("local-lb.yaml", "external-lb.yaml")]


def timed(executor: str, nodes: int, reps: int, jobs: int | None) -> tuple[float, int, float]:
    """Wall time of the batch, its number of runs, and the CPU seconds its runs used."""
    out = Path(tempfile.mkdtemp(prefix=f"hasim-bench-{executor}-"))
    try:
        t0 = time.perf_counter()
        runs = run_batch(scenarios(nodes), out=out, reps=reps, executor=executor,  # type: ignore[arg-type]
                         jobs=jobs, progress=False)
        wall = time.perf_counter() - t0
        assert (runs["status"] == "ok").all(), runs.loc[runs["status"] != "ok", "error"]
        return wall, len(runs), float(runs["cpu_s"].sum())
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=150, help="nodes per cluster")
    parser.add_argument("--reps", type=int, default=20, help="replications per scenario")
    parser.add_argument("--jobs", type=int, default=None, help="workers (default: all cores)")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--only-dask", action="store_true",
                        help="serial and Dask only (the process executor's forkserver, once "
                             "started, would serve the Dask workers too)")
    args = parser.parse_args()
    cores = os.cpu_count()
    print(f"batch: 2 scenarios x {args.reps} replications, {args.nodes} nodes, 10 simulated "
          f"minutes each; {cores} cores, load average {os.getloadavg()[0]:.2f}")
    workers = args.jobs or cores or 1
    serial, n, cpu = timed("serial", args.nodes, args.reps, args.jobs)
    # CPU share: the runs' CPU seconds over the wall time x workers. Below ~0.95 the
    # machine was shared with other work, and the speed-ups below understate the executor.
    print(f"  serial : {serial:6.1f} s for {n} runs ({serial / n:.2f} s/run), "
          f"CPU share {cpu / serial:.2f}")
    if not args.only_dask:
        process, _, cpu = timed("process", args.nodes, args.reps, args.jobs)
        print(f"  process: {process:6.1f} s   speed-up {serial / process:.2f}x "
              f"(goal >= 1.8x on 2 cores), CPU share {cpu / (process * workers):.2f}")
    if not args.skip_dask:
        try:
            dask, _, cpu = timed("dask", args.nodes, args.reps, args.jobs)
        except ImportError:
            print("  dask   : not installed (pip install 'hasim[dask]')")
        else:
            print(f"  dask   : {dask:6.1f} s   speed-up {serial / dask:.2f}x (goal >= 1.6x; "
                  f"LocalCluster, worker processes), CPU share {cpu / (dask * workers):.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
