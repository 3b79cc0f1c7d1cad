"""``make demo``: the HA-mode comparison batch over the scenarios at the top of ``scenarios/``.

Every scenario file there is one HA layout of the 2016 doc with the same fault (the first
master fails at 60 s). The demo prints each layout's endpoints and single points of
failure, runs every scenario ``--reps`` times with the process executor through
:func:`hasim.run_batch` (replication r of every layout gets the same seed: common random
numbers), then writes under ``results/demo/``: ``runs.parquet``, a Parquet file per run
and table, ``summary.csv`` (means with 95 % intervals) and the standard figures in
``plots/``. Rerunning it reuses the runs already there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hasim.audit import audit, format_audit
from hasim.batch import run_batch
from hasim.endpoints import evaluate_endpoints
from hasim.errors import HasimError
from hasim.plots import plot_results
from hasim.scenario import load_scenario
from hasim.summarize import format_summary, write_summary
from hasim.topology import build_topology


def describe(path: Path) -> None:
    """One scenario's layout in a few lines: a node's endpoints, the audit."""
    scenario = load_scenario(path)
    eps = evaluate_endpoints(scenario)
    node = next((e for e in eps.values() if "kube-node" in e.roles), next(iter(eps.values())))
    print(f"== {scenario.name}: {scenario.spec.description}")
    print(f"   a node reaches the apiserver at {node.apiserver}, "
          f"etcd at {', '.join(node.etcd)}")
    print("   " + format_audit(audit(build_topology(scenario))).replace("\n", "\n   "))


def run(scenario_dir: Path, out: Path, reps: int = 5, executor: str = "process",
        jobs: int | None = None) -> Path:
    """Run the demo batch; returns the output folder."""
    files = sorted(scenario_dir.glob("*.yaml"))
    if not files:
        raise HasimError(f"{scenario_dir}: no scenario files (*.yaml)")
    for path in files:
        describe(path)
    print(f"\nrunning {len(files)} scenarios x {reps} replications ({executor} executor)...")
    runs = run_batch(files, out=out, reps=reps, executor=executor,  # type: ignore[arg-type]
                     jobs=jobs, progress=True)
    summary_path, summary = write_summary(out)
    figures = plot_results(out, out / "plots")
    print("\nfirst master fails at 60 s: mean over replications ± 95 % interval")
    print(format_summary(summary))
    failed = runs[runs["status"] != "ok"]
    if len(failed):
        print(f"\n{len(failed)} run(s) failed: see the error column of {out}/runs.parquet")
    print(f"\nresults in {out}/: runs.parquet, {summary_path.name}, one Parquet folder per "
          f"table (failovers/, node_status/, ...)")
    print(f"figures in {out / 'plots'}/: " + ", ".join(f.name for f in figures))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hasim.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", type=Path, default=Path("scenarios"))
    parser.add_argument("--out", type=Path, default=Path("results/demo"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--executor", choices=["serial", "process", "dask"], default="process")
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        run(args.scenarios, args.out, args.reps, args.executor, args.jobs)
    except HasimError as exc:
        print(f"hasim: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
