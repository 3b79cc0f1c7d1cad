"""One run: instantiate the simulated parts from the topology graph and run SimPy.

The graph (``hasim.graph.topology``) decides what exists and who connects to whom; this module
only walks it: each node's part is built by its kind's builder (:mod:`hasim.sim.model`),
then the run starts, and its records become tables. Randomness comes from one
``numpy.random.SeedSequence`` per run, one stream per purpose, so that the same seed
gives the same run in any process and two HA modes run with one seed see the same
faults at the same times and the same client phases (common random numbers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

# Each part's module registers its builders (hasim.sim.model.builds) when imported: the
# modules below are every kind the topology can hold.
import hasim.sim.clients
import hasim.sim.haproxy
import hasim.sim.lifecycle
import hasim.sim.nginx
import hasim.sim.service
import hasim.sim.vip  # noqa: F401
from hasim.graph.topology import build_topology
from hasim.graph.topology import hosts as graph_hosts
from hasim.sim.apiserver import Apiservers, ClusterState
from hasim.sim.availability import ETCD_QUORUM, structural
from hasim.sim.etcd import EtcdCluster, request_timeout
from hasim.sim.faults import FaultInjector
from hasim.sim.kernel import Environment, events_processed, quiet_gc
from hasim.sim.metrics import SimResult, build_result
from hasim.sim.model import STAGES, Model, elaborate
from hasim.sim.network import Network, Proc
from hasim.sim.records import Recorder
from hasim.sim.sampling import AggregateChecks, SamplingPlan, plan_sampling
from hasim.spec.scenario import Scenario

#: One random stream per purpose; the order is part of the reproducibility contract.
PURPOSES = ("clients", "faults", "checks", "workers", "control-plane", "clock", "etcd",
            "leader-election", "vip", "etcd-proxy", "service", "cni")


def streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators per purpose, derived from the run's seed."""
    return {
        p: np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(i,)))
        for i, p in enumerate(PURPOSES)
    }


def simulate(scenario: Scenario, seed: int | None = None) -> SimResult:
    """Run ``scenario`` once and return its tables (docs/interfaces.md ``hasim.simulate``).

    ``seed`` defaults to the scenario's own ``seed``. The cyclic garbage collector does
    not run meanwhile, and once at the end over what the run made
    (:func:`hasim.sim.kernel.quiet_gc`): building a 10,000-node model and its tables makes
    millions of objects, and full collections over all of them made the tables of such a
    run take three times longer than linear in the nodes; the final one frees the model,
    which ends as one big cycle.
    """
    with quiet_gc():
        return _simulate(scenario, seed)


def _simulate(scenario: Scenario, seed: int | None) -> SimResult:
    wall0 = time.perf_counter()
    spec = scenario.spec
    seed = spec.seed if seed is None else seed
    rng = streams(seed)
    g = build_topology(scenario)
    env = Environment()
    rec = Recorder()
    net = Network(env, spec.network.rtt, rec, spec.network.tcp_syn_retries,
                  spec.network.tcp_syn_linear_timeouts)
    apis = Apiservers(net, spec.apiserver.service_time)
    clock_phase = float(rng["clock"].random())
    # Sampled clients (scenario `sampling`): symmetric nodes beyond the first K of their
    # class run no client and no etcd proxy; their HAProxies' checks run in aggregate.
    plan = plan_sampling(scenario, g, spec.sampling.nodes) if spec.fidelity == "full" \
        else SamplingPlan()
    skip = plan.aggregated

    # The raft group is one part over every member node.
    members = [d["host"] for _, d in g.nodes(data=True) if d["component"] == "etcd"]
    etcd = EtcdCluster(env, net, rec, members, spec.etcd, rng["etcd"])
    m = Model(scenario, g, env, net, rec, apis, etcd, rng, skip, None, clock_phase,
              ClusterState(), ClusterState())
    elaborate(m, ("members", "servers"))
    _wire_apiservers_to_etcd(m)
    if skip:
        m.agg = AggregateChecks(env, net, rec, apis.healthy)
        etcd.before_leader_change.append(m.agg.catch_up)

    if spec.fidelity == "structural":
        return _structural(scenario, g, env, net, rec, etcd, rng, seed, wall0)

    elaborate(m, STAGES[2:])
    for s in m.starters:
        s.start()
    injector = FaultInjector(env, net, rec, scenario, rng["faults"])
    injector.on_stop.append(etcd.stopping)
    injector.on_stop += m.stop_hooks
    injector.start()
    agg, vip, nodes, clients = m.agg, m.vip, m.nodes, m.clients
    run0 = time.perf_counter()
    env.run(until=spec.duration)
    run_s = time.perf_counter() - run0
    events = events_processed(env)
    if agg is not None:
        agg.finish(spec.duration)
    summary = {
        "scenario": spec.name,
        "seed": seed,
        "duration_s": spec.duration,
        "hosts": len(graph_hosts(g)),
        "nodes": len(nodes) + sum(1 for _, d in g.nodes(data=True)
                                  if d["component"] == "kubelet" and d["host"] in skip),
        "events": int(events),
        "wall_s": time.perf_counter() - wall0,
    }
    if skip:
        summary["sampled_nodes"] = sum(len(c.sampled) for c in plan.classes)
        summary["aggregated_nodes"] = len(skip)
    result = build_result(rec, clients, spec.duration, summary, scenario.resolved(),
                          weights=plan.weights if skip else None)
    result.timing = {"setup_s": run0 - wall0, "run_s": run_s,
                     "tables_s": time.perf_counter() - run0 - run_s,
                     "pending": float(env.pending())}
    _etcd_and_vip_tables(result, etcd, vip)
    rec.clear()  # tabled: freed now, in order, not by the final collection's walk
    return result


def _etcd_and_vip_tables(result: SimResult, etcd: EtcdCluster, vip: Any) -> None:
    """The run's elections and VIP moves (empty tables without a VIP)."""
    result.elections = pd.DataFrame(etcd.elections, columns=[
        "time", "member", "term", "lost_at", "last_heartbeat_at", "election_s"])
    result.vip_moves = pd.DataFrame(vip.moves if vip else [], columns=[
        "time", "from", "to", "lost_at", "takeover_s"])


def _wire_apiservers_to_etcd(m: Model) -> None:
    """Each apiserver's answer depends on its way to etcd: through its etcd proxy (which
    must be up) or straight to the members it is given."""
    g, net, etcd, apis = m.g, m.net, m.etcd, m.apis
    if not etcd.members:
        return
    api_etcd = {(d["host"], "apiserver"): m.etcd_path(n) for n, d in g.nodes(data=True)
                if d["component"] == "apiserver"}

    def via_etcd_path(proc: Proc, test: Callable[[str, list[Proc]], bool]) -> bool:
        proxy, direct = api_etcd.get(proc, (None, []))
        if proxy is not None:
            return net.is_alive(proxy.proc) and test(proxy.host, proxy.backends)
        return test(proc[0], direct)

    def etcd_ok(proc: Proc) -> bool:
        return via_etcd_path(proc, etcd.serves)

    stall_s = request_timeout(m.spec.etcd)

    def etcd_stall(proc: Proc) -> float | None:
        return stall_s if via_etcd_path(proc, etcd.stalls) else None

    apis.etcd_ok = etcd_ok
    apis.etcd_stall = etcd_stall
    etcd.on_leader_change.append(apis.invalidate)


def _structural(scenario: Scenario, g: Any, env: Environment, net: Network, rec: Recorder,
                etcd: EtcdCluster, rng: dict[str, np.random.Generator], seed: int,
                wall0: float) -> SimResult:
    """Faults only; availability from who has a working path at each instant."""
    spec = scenario.spec
    for _, d in g.nodes(data=True):
        if not d.get("virtual"):
            net.add_process((d["host"], d["component"]))
    injector = FaultInjector(env, net, rec, scenario, rng["faults"])
    injector.on_stop.append(etcd.stopping)
    injector.start()
    env.run(until=spec.duration)
    events = events_processed(env)
    table, per_class = structural(g, rec.faults, spec.duration)
    clients = {str(r.client): (str(r.host), str(r.client_class)) for r in table.itertuples()
               if r.client != ETCD_QUORUM}
    summary = {
        "scenario": spec.name,
        "seed": seed,
        "duration_s": spec.duration,
        "hosts": len(graph_hosts(g)),
        "nodes": sum(1 for _, d in g.nodes(data=True) if d["component"] == "kubelet"),
        "events": int(events),
        "wall_s": time.perf_counter() - wall0,
        "availability": per_class,
    }
    result = build_result(rec, clients, spec.duration, summary, scenario.resolved())
    result.availability = table
    _etcd_and_vip_tables(result, etcd, None)
    rec.clear()
    return result
