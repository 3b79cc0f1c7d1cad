"""``hasim assess`` at 100 and at 5,000 nodes, in the same run: the wall-time ratio.

Goal (issue 20): at most 3. Both clusters are INI inventories in today's style (3
masters running etcd, N worker nodes), assessed with the same options: every layout,
``--faults`` (default ``crash,poweroff``), ``--reps`` replications, tuning on, the
process executor on all cores, a fresh result directory each time. The 5,000-node
cluster runs with sampled clients (hasim.assessment.assess.SAMPLED_NODES per class), as assess
does for any cluster above hasim.assessment.assess.SAMPLE_ABOVE nodes; the 100-node one in full.
Each size runs ``--repeat`` times, interleaved (small, big, small, big...), and the
ratio is the median big run over the median small run, printed with the range of the
runs and the load average, since the machine may be shared.

    python benchmarks/assess.py [--repeat 3] [--faults crash,poweroff] [--reps 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

GOAL = 3.0


def write_inventory(root: Path, nodes: int) -> Path:
    lines = ["[kube_control_plane]"] + [f"master{i} ansible_host=10.0.0.{i}" for i in (1, 2, 3)]
    lines += ["[etcd]", "master1", "master2", "master3", "[kube_node]"]
    lines += [f"node{i} ansible_host=10.{1 + i // 60000}.{(i // 250) % 240}.{i % 250 + 1}"
              for i in range(nodes)]
    lines += ["[k8s_cluster:children]", "kube_control_plane", "kube_node"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "inventory.ini").write_text("\n".join(lines) + "\n")
    return root


def once(inv: Path, out: Path, faults: str, reps: int) -> float:
    import hasim

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    hasim.assess(inv, faults=faults, reps=reps, out=out, progress=False)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--faults", default="crash,poweroff")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--big", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hasim-bench-assess-") as tmp:
        root = Path(tmp)
        small = write_inventory(root / f"n{args.small}", args.small)
        big = write_inventory(root / f"n{args.big}", args.big)
        times: dict[int, list[float]] = {args.small: [], args.big: []}
        for i in range(args.repeat):
            for n, inv in ((args.small, small), (args.big, big)):
                dt = once(inv, root / f"out-{n}", args.faults, args.reps)
                times[n].append(dt)
                print(f"run {i + 1}: {n:5d} nodes {dt:7.1f} s  (load {os.getloadavg()[0]:.2f})",
                      flush=True)
    s, b = statistics.median(times[args.small]), statistics.median(times[args.big])
    ratios = [y / x for x, y in zip(times[args.small], times[args.big], strict=True)]
    print(f"assess {args.small} nodes: median {s:.1f} s [{min(times[args.small]):.1f}, "
          f"{max(times[args.small]):.1f}]")
    print(f"assess {args.big} nodes: median {b:.1f} s [{min(times[args.big]):.1f}, "
          f"{max(times[args.big]):.1f}]")
    print(f"ratio {args.big}/{args.small}: {b / s:.2f} (pairwise {min(ratios):.2f}-"
          f"{max(ratios):.2f}); goal at most {GOAL:g}: {'met' if b / s <= GOAL else 'MISSED'}")


if __name__ == "__main__":
    main()
