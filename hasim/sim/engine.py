"""One run: instantiate the simulated parts from the topology graph and run SimPy.

The graph (``hasim.topology``) decides what exists and who connects to whom; this module
only puts a simulated process on each graph node. Randomness comes from one
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

from hasim.scenario import ExternalHAProxySpec, LocalHAProxySpec, NginxSpec, Scenario
from hasim.sim.apiserver import Apiservers, ClusterState
from hasim.sim.availability import ETCD_QUORUM, structural
from hasim.sim.clients import (
    KUBE_PROXY_WATCHES,
    KUBELET_WATCHES,
    CniAgent,
    DirectDialer,
    Kubelet,
    KubeProxy,
    Reflector,
)
from hasim.sim.etcd import EtcdCluster, EtcdProxy, Flannel, request_timeout
from hasim.sim.faults import FaultInjector
from hasim.sim.haproxy import HAProxy
from hasim.sim.kernel import Environment, events_processed, quiet_gc
from hasim.sim.lifecycle import ControllerManager
from hasim.sim.metrics import SimResult, build_result
from hasim.sim.network import Network, Proc
from hasim.sim.nginx import NginxProxy
from hasim.sim.records import Recorder
from hasim.sim.sampling import AggregateChecks, SamplingPlan, plan_sampling
from hasim.sim.service import KubernetesService
from hasim.sim.vip import Vip
from hasim.topology import CNI_AGENTS, SERVICE_NODE, build_topology

#: One random stream per purpose; the order is part of the reproducibility contract.
PURPOSES = ("clients", "faults", "checks", "workers", "control-plane", "clock", "etcd",
            "leader-election", "vip", "etcd-proxy", "service", "cni")


def streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators per purpose, derived from the run's seed."""
    return {
        p: np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(i,)))
        for i, p in enumerate(PURPOSES)
    }


def _proc(node: str, g: Any) -> Proc:
    d = g.nodes[node]
    return (d["host"], d["component"])


def simulate(scenario: Scenario, seed: int | None = None) -> SimResult:
    """Run ``scenario`` once and return its tables (CONTRACT.md ``hasim.simulate``).

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
    state = ClusterState()
    clock_phase = float(rng["clock"].random())
    # Sampled clients (scenario `sampling`): symmetric nodes beyond the first K of their
    # class run no client and no etcd proxy; their HAProxies' checks run in aggregate.
    plan = plan_sampling(scenario, g, spec.sampling.nodes) if spec.fidelity == "full" \
        else SamplingPlan()
    skip = plan.aggregated

    members = [d["host"] for _, d in g.nodes(data=True) if d["component"] == "etcd"]
    etcd = EtcdCluster(env, net, rec, members, spec.etcd, rng["etcd"])
    for h in members:
        net.add_process((h, "etcd"))
    proxies: dict[str, EtcdProxy] = {}
    for n, d in g.nodes(data=True):
        if d["component"] == "apiserver":
            apis.add(d["host"])
        elif d["component"] == "etcd-proxy" and d["host"] not in skip:
            proxies[n] = EtcdProxy(env, net, d["host"], [_proc(v, g) for v in g.successors(n)],
                                   etcd, rng["etcd-proxy"])

    def etcd_path(node: str) -> Any:
        """How a component reaches etcd: (proxy, None) or (None, [members])."""
        targets = [v for v in g.successors(node) if g.edges[node, v]["purpose"] == "etcd"]
        via = [proxies[v] for v in targets if v in proxies]
        return (via[0] if via else None), [_proc(v, g) for v in targets if v not in proxies]

    api_etcd = {(d["host"], "apiserver"): etcd_path(n) for n, d in g.nodes(data=True)
                if d["component"] == "apiserver"}

    def via_etcd_path(proc: Proc, test: Callable[[str, list[Proc]], bool]) -> bool:
        """``test(host, members)`` on the apiserver's way to etcd: through its proxy (which
        must be up) or straight to the members."""
        proxy, direct = api_etcd.get(proc, (None, []))
        if proxy is not None:
            return net.is_alive(proxy.proc) and test(proxy.host, proxy.backends)
        return test(proc[0], direct)

    def etcd_ok(proc: Proc) -> bool:
        return via_etcd_path(proc, etcd.serves)

    stall_s = request_timeout(spec.etcd)

    def etcd_stall(proc: Proc) -> float | None:
        return stall_s if via_etcd_path(proc, etcd.stalls) else None

    if members:
        apis.etcd_ok = etcd_ok
        apis.etcd_stall = etcd_stall
        etcd.on_leader_change.append(apis.invalidate)

    agg = AggregateChecks(env, net, rec, apis.healthy) if skip else None
    if agg is not None:
        etcd.before_leader_change.append(agg.catch_up)

    if spec.fidelity == "structural":
        return _structural(scenario, g, env, net, rec, etcd, rng, seed, wall0)

    balancers: dict[str, Any] = {}
    for n, d in g.nodes(data=True):
        comp = d["component"]
        if comp not in {"lb", "external-lb"}:
            continue
        servers = [_proc(v, g) for v in g.successors(n)]
        if agg is not None and d["host"] in skip:
            if comp == "external-lb" or d.get("kind") == "haproxy":
                local = spec.balancers.local if comp == "lb" else spec.balancers.external
                aspec = local if isinstance(local, LocalHAProxySpec | ExternalHAProxySpec) \
                    else (LocalHAProxySpec() if comp == "lb" else ExternalHAProxySpec())
                agg.add(d["host"], comp, servers, aspec, rng["checks"])
            continue
        if comp == "lb":
            local = spec.balancers.local
            if d.get("kind") == "haproxy":
                hspec = local if isinstance(local, LocalHAProxySpec) else LocalHAProxySpec()
                balancers[n] = HAProxy(env, net, rec, d["host"], "lb", servers, hspec,
                                       rng["checks"], spec.clients.tcp_syn_timeout, apis.healthy)
            else:
                nspec = local if isinstance(local, NginxSpec) else NginxSpec()
                balancers[n] = NginxProxy(env, net, rec, d["host"], servers, nspec,
                                          rng["workers"], clock_phase)
        else:
            espec = spec.balancers.external or ExternalHAProxySpec()
            balancers[n] = HAProxy(env, net, rec, d["host"], "external-lb", servers, espec,
                                   rng["checks"], spec.clients.tcp_syn_timeout, apis.healthy)

    vip = None
    for n, d in g.nodes(data=True):
        if d["component"] != "vip":
            continue
        behind = list(g.successors(n))
        targets = [balancers[v] if v in balancers else
                   DirectDialer(env, net, _proc(v, g), spec.clients.tcp_syn_timeout)
                   for v in behind]
        vspec = (spec.balancers.external.vip if spec.balancers.external is not None
                 else ExternalHAProxySpec().vip)
        vip = Vip(env, net, rec, vspec, [g.nodes[v]["host"] for v in behind], targets,
                  rng["vip"], renews_ok=lambda h: apis.can_write((h, "apiserver")))
        if members:
            # kube-vip renews through the apiserver, so it can renew again when etcd
            # elects a leader, a change the network never announces.
            etcd.on_leader_change.append(vip.changed)

    service = None
    if SERVICE_NODE in g:
        endpoints = [_proc(v, g) for v in g.successors(SERVICE_NODE)]
        service = KubernetesService(env, net, rec, apis, endpoints, rng["service"],
                                    spec.clients.tcp_syn_timeout)
        service.start()

    def dialer_for(client_node: str) -> Any:
        targets = [v for v in g.successors(client_node)
                   if g.edges[client_node, v]["purpose"] == "apiserver"]
        target = targets[0]
        if target == SERVICE_NODE:
            return service
        if g.nodes[target]["component"] == "vip":
            return vip
        if target in balancers:
            return balancers[target]
        return DirectDialer(env, net, _proc(target, g), spec.clients.tcp_syn_timeout)

    clients: dict[str, tuple[str, str]] = {}
    starters: list[Any] = []
    nodes: list[str] = []
    for n, d in g.nodes(data=True):
        comp = d["component"]
        if d["host"] in skip:
            continue
        if comp == "kubelet":
            k = Kubelet(env, net, rec, apis, d["host"], "kubelet", dialer_for(n), spec.clients,
                        kubelet=spec.kubelet, state=state, rng=rng["clients"])
            starters.append(k)
            nodes.append(d["host"])
            clients[k.name] = (d["host"], d["client_class"])
            if spec.clients.disable_http2:  # one connection per watch (clients.py)
                starters += [Reflector(env, net, rec, apis, d["host"], "kubelet",
                                       dialer_for(n), spec.clients, rng=rng["clients"],
                                       offset=k.boot) for _watch in KUBELET_WATCHES]
        elif comp in CNI_AGENTS:
            a = CniAgent(env, net, rec, apis, d["host"], comp, dialer_for(n), spec.clients,
                         rng=rng["cni"])
            starters.append(a)
            clients[a.name] = (d["host"], d["client_class"])
        elif comp == "kube-proxy":
            p = KubeProxy(env, net, rec, apis, d["host"], "kube-proxy", dialer_for(n),
                          spec.clients, rng=rng["clients"])
            starters.append(p)
            clients[p.name] = (d["host"], d["client_class"])
            if spec.clients.disable_http2:
                starters += [Reflector(env, net, rec, apis, d["host"], "kube-proxy",
                                       dialer_for(n), spec.clients, rng=rng["clients"],
                                       offset=p.offset)
                             for _watch in KUBE_PROXY_WATCHES[1:]]

    for n, d in g.nodes(data=True):
        if d["component"] != "flannel" or d["host"] in skip:
            continue
        proxy, direct = etcd_path(n)
        f = Flannel(env, net, rec, d["host"], etcd, proxy, direct[0] if direct else None,
                    rng["clients"])
        starters.append(f)
        clients[f.name] = (d["host"], d["client_class"])

    sched_state = ClusterState()
    masters = [d["host"] for _, d in g.nodes(data=True) if d["component"] == "apiserver"]
    cm_spec = spec.controller_manager
    initial = cm_spec.initial_leader or masters[0]
    for host in masters:
        phase = float(rng["control-plane"].uniform(0, cm_spec.leader_elect_retry_period))
        cm = ControllerManager(env, net, rec, apis, state, host, cm_spec, nodes, phase=phase,
                               rng=rng["leader-election"])
        cm.start(leader=host == initial)
        # kube-scheduler: the same election on its own lease ("kube-scheduler"), through
        # its own master's apiserver; it pauses scheduling, not node lifecycle.
        sched = ControllerManager(env, net, rec, apis, sched_state, host, cm_spec, [],
                                  phase=float(rng["control-plane"].uniform(
                                      0, cm_spec.leader_elect_retry_period)),
                                  rng=rng["leader-election"], component="scheduler")
        sched.start(leader=host == initial)

    for s in starters:
        s.start()
    injector = FaultInjector(env, net, rec, scenario, rng["faults"])
    injector.on_stop.append(etcd.stopping)
    if vip is not None:
        injector.on_stop.append(vip.stopping)
    if service is not None:
        injector.on_stop.append(service.stopping)
    injector.start()
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
        "hosts": len({d["host"] for _, d in g.nodes(data=True)}),
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
    result.elections = pd.DataFrame(etcd.elections, columns=[
        "time", "member", "term", "lost_at", "last_heartbeat_at", "election_s"])
    result.vip_moves = pd.DataFrame(vip.moves if vip else [], columns=[
        "time", "from", "to", "lost_at", "takeover_s"])
    rec.clear()  # tabled: freed now, in order, not by the final collection's walk
    return result


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
        "hosts": len({d["host"] for _, d in g.nodes(data=True)}),
        "nodes": sum(1 for _, d in g.nodes(data=True) if d["component"] == "kubelet"),
        "events": int(events),
        "wall_s": time.perf_counter() - wall0,
        "availability": per_class,
    }
    result = build_result(rec, clients, spec.duration, summary, scenario.resolved())
    result.availability = table
    result.elections = pd.DataFrame(etcd.elections, columns=[
        "time", "member", "term", "lost_at", "last_heartbeat_at", "election_s"])
    result.vip_moves = pd.DataFrame([], columns=["time", "from", "to", "lost_at", "takeover_s"])
    rec.clear()
    return result
