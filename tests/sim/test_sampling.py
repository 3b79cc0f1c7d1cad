"""Sampled clients (scenario ``sampling.nodes``; hasim.sim.sampling) against the full model.

What is proved:
- the plan: masters, nodes a fault names and nodes behind a shared external LB are never
  aggregated; symmetric nodes form one class per side of a partition; a class larger
  than K keeps its first K nodes, each standing for (class size / K);
- the health checks stay exact: with the same seed, the active checks of every local
  HAProxy per apiserver, the LBs' up/down transitions and detection times of a sampled
  run equal the full model's, under a crash, a power-off, a partition and a slow master;
- the clients agree in distribution: failover latencies of the K sampled nodes and of
  all nodes of the full model pass a two-sample Kolmogorov-Smirnov test (p > 0.05), per
  client kind, at 2,000 nodes; weighted counts estimate the full cluster's (every kubelet
  fails after a power-off: the weights add up to the nodes). Both runs take one seed, so
  that the draws made once per cluster (the faults, the etcd election) are the same: a
  client's latency depends on them, and two seeds can differ there in a way no sampling
  causes (an election that takes a second term, about H/E of them, cuts off 38 % of the
  kubelets after a crash instead of 19 %).

Expected values come from the full model run alongside, or from counting hosts; never
from an earlier sampled run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import hasim
from hasim.graph.topology import build_topology
from hasim.sim.engine import simulate
from hasim.sim.sampling import plan_sampling
from hasim.spec.scenario import scenario_from_dict

P_MIN = 0.05


def local(kind: str, nodes: int, faults: list[dict[str, Any]], duration: str = "6m",
          rules: str = "ha-mode-2016", **extra: Any) -> hasim.Scenario:
    raw: dict[str, Any] = {
        "name": f"sampling-{kind}",
        "cluster": {"rules": rules, "generate": {"masters": 3, "etcd": 3, "nodes": nodes},
                    "vars": {"loadbalancer_apiserver_localhost": True}},
        "balancers": {"local": {"kind": kind}},
        "faults": faults,
        "duration": duration,
    }
    raw.update(extra)
    return scenario_from_dict(raw)


CRASH = {"at": "60s", "target": "kube-master[0]", "kind": "crash", "duration": "5m"}


# --- the plan ---------------------------------------------------------------------------------


def test_plan_keeps_masters_targets_and_partition_sides_apart() -> None:
    sc = local("nginx", 40, [
        CRASH,
        {"at": "90s", "target": "node7", "kind": "poweroff"},
        {"at": "2m", "target": "kube-master[1]", "kind": "partition", "peers": "node1",
         "duration": "30s"},
    ])
    plan = plan_sampling(sc, build_topology(sc), 4)
    classes = {tuple(c.members): c for c in plan.classes}
    # node7 (a fault's target) and the masters are never aggregated; node1 is on the
    # other side of the partition than node2..node40, alone in its class (not > K).
    rest = [f"node{i}" for i in range(2, 41) if i != 7]
    assert list(classes) == [tuple(rest)]
    c = classes[tuple(rest)]
    assert c.sampled == rest[:4]
    assert c.weight == pytest.approx(len(rest) / 4)
    assert plan.aggregated == set(rest[4:])
    assert plan.weights == {h: len(rest) / 4 for h in rest[:4]}


def test_nodes_behind_a_shared_external_lb_are_never_aggregated() -> None:
    sc = hasim.load_scenario("scenarios/external-lb.yaml").with_overrides(
        {"cluster.generate.nodes": 30})
    assert plan_sampling(sc, build_topology(sc), 3).classes == []
    r = simulate(sc.with_overrides({"duration": "2m", "sampling.nodes": 3}), seed=0)
    assert "sampled_nodes" not in r.summary and "weight" not in r.failovers.columns


# --- exact health checks ----------------------------------------------------------------------


@pytest.mark.parametrize("fault", [
    CRASH,
    {"at": "60s", "target": "kube-master[0]", "kind": "poweroff", "duration": "3m"},
    {"at": "60s", "target": "kube-master[1]", "kind": "partition", "peers": "kube-node",
     "duration": "2m"},
    {"at": "60s", "target": "kube-master[2]", "kind": "slow", "delay": "40s",
     "duration": "2m"},
], ids=["crash", "poweroff", "partition", "slow"])
def test_health_checks_of_aggregated_haproxies_are_exact(fault: dict[str, Any]) -> None:
    sc = local("haproxy", 60, [fault], rules="kubespray-2026-01")
    full = simulate(sc, seed=3)
    sampled = simulate(sc.with_overrides({"sampling.nodes": 5}), seed=3)
    assert sampled.summary["sampled_nodes"] == 5 and sampled.summary["aggregated_nodes"] == 55
    assert sampled.summary["nodes"] == full.summary["nodes"]

    def active(r: Any) -> pd.DataFrame:
        hc = r.health_checks
        return hc.loc[hc["kind"] == "active", ["source", "target", "count"]].reset_index(
            drop=True)

    def transitions(r: Any) -> pd.DataFrame:
        st = r.state_changes
        return st.loc[st["component"] == "lb", ["time", "host", "subject", "from", "to",
                                                "cause"]].sort_values(
            ["time", "host", "subject"]).reset_index(drop=True)

    def detections(r: Any) -> pd.DataFrame:
        return r.detections[["balancer", "backend", "detected_at"]].sort_values(
            ["balancer", "backend"]).reset_index(drop=True)

    # One row per (node's LB, apiserver), aggregated nodes included, counts equal. (The
    # masters run no local LB in current kubespray: they use 127.0.0.1:6443.)
    assert len(active(full)) == 60 * 3
    pd.testing.assert_frame_equal(active(sampled), active(full))
    assert sampled.summary["active_checks_per_s"] == full.summary["active_checks_per_s"]
    pd.testing.assert_frame_equal(transitions(sampled), transitions(full))
    pd.testing.assert_frame_equal(detections(sampled), detections(full))
    # The sampled run did that without an event per check: far fewer events.
    assert sampled.summary["events"] < full.summary["events"] / 4


# --- clients in distribution ------------------------------------------------------------------


def latencies(r: Any, kind: str) -> np.ndarray:
    fo = r.failovers
    on_nodes = fo["host"].str.startswith("node") & fo["client"].str.endswith("/" + kind)
    return fo.loc[on_nodes, "latency_s"].to_numpy()


def check_agreement(sc: hasim.Scenario, k: int, kinds: tuple[str, ...]) -> None:
    full = simulate(sc, seed=11)
    sampled = simulate(sc.with_overrides({"sampling.nodes": k}), seed=11)
    for kind in kinds:
        a, b = latencies(full, kind), latencies(sampled, kind)
        assert len(b) == k and len(a) > k
        assert (a > 0).any(), f"{kind}: no failover to compare"
        p = stats.ks_2samp(a, b).pvalue
        assert p > P_MIN, f"{kind}: KS p = {p:.4f} (full n={len(a)}, sampled n={len(b)})"


def test_failover_latencies_agree_at_2000_nodes() -> None:
    """nginx local LBs, the first master powered off: every kubelet fails over."""
    sc = local("nginx", 2000, [{"at": "60s", "target": "kube-master[0]", "kind": "poweroff"}],
               duration="4m")
    check_agreement(sc, 200, ("kubelet",))


def test_failover_latencies_agree_small() -> None:
    sc = local("haproxy", 400, [{"at": "60s", "target": "kube-master[0]", "kind": "poweroff"}],
               duration="4m", rules="kubespray-2026-01")
    check_agreement(sc, 50, ("kubelet",))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
@pytest.mark.parametrize("fault", ["crash", "poweroff"])
def test_failover_latencies_agree_at_2000_nodes_long(kind: str, fault: str) -> None:
    sc = local(kind, 2000, [{"at": "60s", "target": "kube-master[0]", "kind": fault,
                             "duration": "5m"}], duration="10m")
    check_agreement(sc, 200, ("kubelet", "flannel") if kind == "nginx" else ("kubelet",))


def test_weights_estimate_the_whole_cluster() -> None:
    """After a power-off every kubelet's connection is cut: the weighted count of failed
    kubelets is the number of nodes, whichever are sampled."""
    n, k = 300, 30
    sc = local("nginx", n, [{"at": "60s", "target": "kube-master[0]", "kind": "poweroff"}],
               duration="3m")
    r = simulate(sc.with_overrides({"sampling.nodes": k}), seed=0)
    fo = r.failovers
    kubelets = fo[fo["host"].str.startswith("node") & fo["client"].str.endswith("/kubelet")]
    assert len(kubelets) == k and (kubelets["latency_s"] > 0).all()
    assert kubelets["weight"].sum() == pytest.approx(n)
    assert set(kubelets["weight"]) == {n / k}
    # Masters stand for themselves.
    assert (fo.loc[fo["host"].str.startswith("master"), "weight"] == 1.0).all()
    assert r.summary["nodes"] == n + 3 and r.summary["aggregated_nodes"] == n - k
