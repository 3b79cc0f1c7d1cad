"""Batch executors compared: serial, process and Dask, on the same runs, each batch in a
fresh child process and into a fresh result directory.

Run alone: ``.venv/bin/python benchmarks/batch.py [--nodes N] [--reps N] [--sweep-reps N]``
(``make bench`` runs it last). Three measurements:

1. The 40-run batch of issue 5 (2 scenarios x 20 replications, 150 nodes): wall times
   and speed-ups over serial (goals on a 2-core machine: process >= 1.8x, issue 8, and
   >= 1.7x for this batch, issue 5).
2. Each executor's fixed cost: the same batch machinery on 2 runs of a 3-node cluster
   for 10 simulated seconds, less the serial time of those runs. What an executor costs
   whatever the batch: starting its workers and their imports, closing them.
3. A sweep four times as long (2 x 80 replications by default), the size Dask is meant
   for (goal: Dask LocalCluster >= 1.6x). With W the serial time and F the fixed cost,
   n workers can do no better than W / (W / n + F): with F of some 2.5 s on 2 cores
   (spawned workers), the 40-run batch (W about 20 s) caps Dask at about 1.6x, a sweep
   of 80 s at 1.9x; with forked workers (F about 0.6 s), 1.9x and 2.0x.

Nothing is asserted: the ratios depend on the machine and on what else runs on it (the
load average is printed beside them). Each executor's time includes its own start-up
(importing distributed, starting the process pool's or the Dask LocalCluster's workers,
forked from the batch's process since it runs no other thread), since a user pays it on
every ``hasim run``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import hasim

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def scenarios(nodes: int, duration: str = "10m") -> list[hasim.Scenario]:
    """Two HA modes (local nginx, external HAProxy), master1 crashes at 60 s; ``duration``
    simulated (10 minutes for the batches, 10 s for the fixed cost's runs)."""
    return [hasim.load_scenario(ROOT / "scenarios" / name).with_overrides(
        {"cluster.generate.nodes": nodes, "duration": duration})
        for name in ("local-lb.yaml", "external-lb.yaml")]


def timed(executor: str, nodes: int, duration: str, reps: int, jobs: int | None
          ) -> tuple[float, int, float]:
    """Wall time of the batch, its number of runs, and the CPU seconds its runs used.

    Each batch runs in a fresh child process, timed there from the call of ``run_batch``:
    so every batch pays what a ``hasim run`` pays (importing distributed for Dask, starting
    the workers), and none inherits a pool, an import or a thread from the one before
    it."""
    out = Path(tempfile.mkdtemp(prefix=f"hasim-bench-{executor}-"))
    code = "\n".join([
        "import json, sys, time",
        f"sys.path.insert(0, {str(HERE)!r})",
        "from batch import scenarios",
        "from hasim.batches.batch import run_batch",
        "if __name__ == '__main__':",
        f"    runs = scenarios({nodes}, {duration!r})",
        "    t0 = time.perf_counter()",
        f"    table = run_batch(runs, out={str(out)!r}, reps={reps}, executor={executor!r}, "
        f"jobs={jobs!r}, progress=False)",
        "    wall = time.perf_counter() - t0",
        "    bad = table.loc[table['status'] != 'ok', 'error']",
        "    assert bad.empty, bad.tolist()",
        "    print(json.dumps([wall, len(table), float(table['cpu_s'].sum())]))",
    ])
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode:
            if "ModuleNotFoundError: No module named 'distributed'" in done.stderr:
                raise ImportError("distributed")
            raise RuntimeError(f"{executor} batch failed:\n{done.stderr[-3000:]}")
        wall, n, cpu = json.loads(done.stdout.strip().splitlines()[-1])
        return float(wall), int(n), float(cpu)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def compare(nodes: int, duration: str, reps: int, jobs: int | None, executors: list[str],
            goals: dict[str, str]) -> dict[str, float]:
    """Serial, then each executor, on the same runs: wall times, printed with speed-ups."""
    workers = jobs or os.cpu_count() or 1
    serial, n, cpu = timed("serial", nodes, duration, reps, jobs)
    # CPU share: the runs' CPU seconds over the wall time x workers. Below ~0.95 the
    # machine was shared with other work, or the executor waited (start-up, storing).
    print(f"  serial : {serial:6.1f} s for {n} runs ({serial / n:.2f} s/run), "
          f"CPU share {cpu / serial:.2f}")
    walls = {"serial": serial}
    for executor in executors:
        try:
            wall, _, cpu = timed(executor, nodes, duration, reps, jobs)
        except ImportError:
            print(f"  {executor:7s}: not installed (pip install 'hasim[dask]')")
            continue
        walls[executor] = wall
        print(f"  {executor:7s}: {wall:6.1f} s   speed-up {serial / wall:.2f}x "
              f"({goals[executor]}), CPU share {cpu / (wall * workers):.2f}")
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=150, help="nodes per cluster")
    parser.add_argument("--reps", type=int, default=20, help="replications per scenario")
    parser.add_argument("--sweep-reps", type=int, default=80,
                        help="replications per scenario of the sweep (0: skip it)")
    parser.add_argument("--jobs", type=int, default=None, help="workers (default: all cores)")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--only-dask", action="store_true",
                        help="serial and Dask only")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    workers = args.jobs or cores
    executors = [e for e in ("process", "dask") if not (e == "process" and args.only_dask)
                 and not (e == "dask" and args.skip_dask)]
    goals = {"process": "goal >= 1.8x on 2 cores", "dask": "LocalCluster, worker processes"}
    print(f"batch: 2 scenarios x {args.reps} replications, {args.nodes} nodes, 10 simulated "
          f"minutes each; {cores} cores, load average {os.getloadavg()[0]:.2f}")
    compare(args.nodes, "10m", args.reps, args.jobs, executors, goals)

    # The fixed cost: runs too short to matter, so the batch is all start-up and close.
    print("fixed cost of each executor (2 scenarios x 1 run of 3 nodes, 10 simulated "
          "seconds, less their serial time):")
    serial_tiny, _, _ = timed("serial", 3, "10s", 1, args.jobs)
    fixed: dict[str, float] = {}
    for executor in executors:
        try:
            wall, _, _ = timed(executor, 3, "10s", 1, args.jobs)
        except ImportError:
            continue
        fixed[executor] = wall - serial_tiny
        print(f"  {executor:7s}: {fixed[executor]:5.2f} s")

    if args.sweep_reps:
        print(f"sweep: 2 scenarios x {args.sweep_reps} replications, {args.nodes} nodes "
              f"(load average {os.getloadavg()[0]:.2f})")
        goals = {"process": "goal >= 1.8x on 2 cores", "dask": "goal >= 1.6x"}
        walls = compare(args.nodes, "10m", args.sweep_reps, args.jobs, executors, goals)
        for executor, f in fixed.items():
            w = walls["serial"]
            print(f"  {executor:7s}: bound W / (W / {workers} + F) with this sweep's W "
                  f"{w:.1f} s and F {f:.2f} s: {w / (w / workers + f):.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
