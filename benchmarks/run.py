"""hasim benchmarks: each figure is a ratio against a baseline measured in the same run.

Run with ``make bench`` (or ``python benchmarks/run.py``). Nothing here asserts: speed
goals are read off these ratios, not enforced by timed tests.

- event throughput: hasim's SimPy events per second on a 1,000-node cluster with local
  LBs vs a bare SimPy loop of timeouts (the engine's own ceiling), same process;
- 1,000-node, 10 simulated minutes, one master crash: wall time (issue 3: well under a
  minute).
"""

from __future__ import annotations

import argparse
import time

import simpy

from hasim.scenario import scenario_from_dict
from hasim.sim.engine import simulate


def bare_simpy(events: int = 300_000, procs: int = 2_000) -> float:
    """Events per second of SimPy alone: ``procs`` processes each looping on timeouts."""
    env = simpy.Environment()
    per = events // procs

    def loop(env: simpy.Environment, k: int):  # type: ignore[no-untyped-def]
        for _ in range(per):
            yield env.timeout(1.0 + k * 1e-6)

    for k in range(procs):
        env.process(loop(env, k))
    t0 = time.perf_counter()
    env.run()
    wall = time.perf_counter() - t0
    return (procs * per + procs) / wall


def hasim_run(nodes: int, kind: str, minutes: float = 10.0) -> tuple[float, int, float]:
    """(wall seconds, events, events per second) of one run."""
    scenario = scenario_from_dict({
        "name": f"bench-{kind}-{nodes}",
        "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": nodes},
                    "vars": {"loadbalancer_apiserver_localhost": True}},
        "balancers": {"local": {"kind": kind}},
        "faults": [{"at": "120s", "target": "master1", "kind": "crash"}],
        "duration": f"{minutes}m",
    })
    t0 = time.perf_counter()
    result = simulate(scenario, seed=0)
    wall = time.perf_counter() - t0
    events = int(result.summary["events"])
    return wall, events, events / result.summary["wall_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    args = parser.parse_args()
    base = bare_simpy()
    print(f"bare SimPy timeout loop: {base:,.0f} events/s")
    for kind in ("nginx", "haproxy"):
        wall, events, rate = hasim_run(args.nodes, kind)
        print(f"{args.nodes}-node local {kind}, 10 min, master crash: wall {wall:.2f} s, "
              f"{events:,} events, {rate:,.0f} events/s = {rate / base:.2f} x bare SimPy")


if __name__ == "__main__":
    main()
