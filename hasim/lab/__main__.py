"""``python -m hasim.lab SCENARIO [--trials N] [--out DIR]`` and
``python -m hasim.lab calibrate [--matrix quick|full] [--trials N] [--out DIR]``.

Exit codes as ``hasim``'s: 0 success, 2 bad input or the lab cannot run here (the
message says what is missing), 1 internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hasim.errors import HasimError


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] != ["calibrate"]:
        # One scenario: exactly `hasim lab` (its options, checks and exit codes).
        from hasim.cli import main as hasim_main

        return hasim_main(["lab", *args_list])
    p = argparse.ArgumentParser(prog="python -m hasim.lab calibrate",
                                description="the lab's calibration matrix")
    p.add_argument("--matrix", choices=["quick", "full"], default="full")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--sim-trials", type=int, default=None)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--out", default="results/calibration")
    p.add_argument("--no-etcd", action="store_true", help="skip the real etcd cells")
    p.add_argument("--no-keepalived", action="store_true",
                   help="skip the real keepalived cells")
    p.add_argument("--no-clientgo", action="store_true",
                   help="skip the real client-go (Go HTTP/2) cells")
    a = p.parse_args(args_list[1:])
    if a.trials < 1:
        p.error("--trials must be at least 1")
    try:
        from hasim.lab import run_matrix
        from hasim.lab.matrix import calibration_matrix

        run_matrix(calibration_matrix(a.matrix), a.trials, a.out, parallel=a.parallel,
                   sim_trials=a.sim_trials)
        if not a.no_etcd:
            from hasim.lab.etcd import calibrate as etcd_cells

            etcd_cells(a.out, a.trials, a.matrix)
        if not a.no_keepalived:
            from hasim.lab.keepalived import calibrate as keepalived_cells

            keepalived_cells(a.out, a.trials, a.matrix)
        if not a.no_clientgo:
            from hasim.lab.clientgo import calibrate as clientgo_cells

            clientgo_cells(a.out, a.trials, a.matrix)
    except HasimError as exc:
        print(f"hasim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hasim: interrupted", file=sys.stderr)
        return 130
    return 0

if __name__ == "__main__":
    sys.exit(main())
