"""``make demo``: ``hasim assess`` of the two kubespray inventories bundled in ``inventories/``.

``inventories/kubespray-2016`` (kargo's style of 2016, read with the HA doc's rules) and
``inventories/kubespray-current`` (today's style, today's rules): for each, every access
layout kubespray offers faces the same faults (crash, power-off and partition of a master,
the loss of the LB, the crash of an etcd member; common random numbers), the layouts are
ranked on damage first, one is recommended and its timers tuned. The demo prints each
verdict and where its report is: ``results/demo/<inventory>/report.html``, with
``assessment.json``, ``recommended-vars.yml`` and the batch's tables beside it. Rerunning
reuses the runs already there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hasim.assessment.assess import assess, summary_text
from hasim.errors import HasimError, exit_status

INVENTORIES = {"kubespray-2016": "ha-mode-2016", "kubespray-current": "kubespray-2026-01"}


def run(inventories: Path, out: Path, reps: int = 5, executor: str = "process",
        jobs: int | None = None, tuning: bool = True) -> list[Path]:
    """Assess every bundled inventory; returns the report paths."""
    reports = []
    for name, rules in INVENTORIES.items():
        path = inventories / name
        if not path.exists():
            raise HasimError(f"{path}: no such inventory")
        print(f"\n== {path} ({rules} rules): every layout under the same faults, "
              f"{reps} replications", flush=True)
        a = assess(path, rules=rules, reps=reps, out=out / name, executor=executor,
                   jobs=jobs, tuning=tuning, progress=True)
        print(summary_text(a))
        reports.append(a.out / "report.html")
    print("\nreports (open in a browser): " + ", ".join(str(r) for r in reports))
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hasim.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventories", type=Path, default=Path("inventories"))
    parser.add_argument("--out", type=Path, default=Path("results/demo"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--executor", choices=["serial", "process", "dask"], default="process")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--no-tuning", action="store_true")
    args = parser.parse_args(argv)
    return exit_status(lambda: run(args.inventories, args.out, args.reps, args.executor,
                                   args.jobs, not args.no_tuning))


if __name__ == "__main__":
    sys.exit(main())
