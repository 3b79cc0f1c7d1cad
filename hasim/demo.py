"""``make demo``: compare the HA modes of the scenarios in ``scenarios/``.

For every scenario file at the top of ``scenarios/``: its endpoint table, its topology
drawing and audit, one simulated run; then a summary table and the failover-latency
figure under ``results/demo/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from hasim.audit import audit, format_audit
from hasim.draw import draw_topology
from hasim.endpoints import evaluate_endpoints
from hasim.errors import HasimError
from hasim.plots import failover_ecdf
from hasim.scenario import load_scenario
from hasim.sim.engine import simulate
from hasim.topology import build_topology


def run(scenario_dir: Path, out: Path, seed: int = 0) -> Path:
    """Run the demo; returns the output folder."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(scenario_dir.glob("*.yaml"))
    if not files:
        raise HasimError(f"{scenario_dir}: no scenario files (*.yaml)")
    rows, failovers = [], {}
    for path in files:
        scenario = load_scenario(path)
        eps = evaluate_endpoints(scenario)
        node = next((e for e in eps.values() if "kube-node" in e.roles), next(iter(eps.values())))
        g = build_topology(scenario)
        png = draw_topology(g, out / f"topology-{scenario.name}.png")
        print(f"== {scenario.name}: {scenario.spec.description}")
        print(f"   a node reaches the apiserver at {node.apiserver}, etcd at {', '.join(node.etcd)}")
        print("   " + format_audit(audit(g)).replace("\n", "\n   "))
        result = simulate(scenario, seed)
        failovers[scenario.name] = result.failovers
        s = result.summary
        rows.append({
            "scenario": scenario.name,
            "clients_failed": s["clients_failed"],
            "clients_never_recovered": s["clients_never_recovered"],
            "failover_mean_s": round(s["failover_mean_s"], 2),
            "failover_max_s": s["failover_max_s"],
            "nodes_not_ready": s["nodes_not_ready"],
            "not_ready_node_s": round(s["not_ready_node_s"], 1),
            "detections": s["detections"],
            "active_checks_per_s": round(s["active_checks_per_s"], 3),
            "events": s["events"],
        })
        print(f"   simulated {s['duration_s']:g} s: {s['clients_failed']} client(s) cut off, "
              f"{s['nodes_not_ready']} node(s) NotReady; topology drawn to {png}\n")
    table = pd.DataFrame(rows)
    table.to_csv(out / "summary.csv", index=False)
    fig = failover_ecdf(failovers, out / "failover-latency.png",
                        title="First master fails: how long is each client cut off?")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.to_string(index=False))
    print(f"\nresults written to {out}/: summary.csv, {fig.name}, topology-*.png")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hasim.demo", description=__doc__)
    parser.add_argument("--scenarios", type=Path, default=Path("scenarios"))
    parser.add_argument("--out", type=Path, default=Path("results/demo"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        run(args.scenarios, args.out, args.seed)
    except HasimError as exc:
        print(f"hasim: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
