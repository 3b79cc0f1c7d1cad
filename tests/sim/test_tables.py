"""The result tables of ``hasim.simulate`` (docs/interfaces.md): their columns, the semantics
of ``failovers`` on hand-made records, and a scale smoke run."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import hasim
from hasim.sim.metrics import failovers, node_status
from hasim.sim.records import FaultRecord, Recorder

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

# docs/interfaces.md "Python API": the columns of each table, in order.
COLUMNS = {
    "failovers": ["fault_id", "fault_kind", "target", "fault_at", "client", "host",
                  "first_failure_at", "recovered_at", "latency_s"],
    "detections": ["fault_id", "balancer", "host", "backend", "detected_at", "detect_s"],
    "health_checks": ["source", "target", "kind", "count", "rate_per_s"],
    "node_status": ["host", "not_ready_at", "ready_at", "duration_s"],
    "requests": ["client", "host", "start", "end", "outcome", "backend"],
    "state_changes": ["time", "component", "host", "subject", "from", "to", "cause"],
    "availability": ["client", "host", "client_class", "available_s", "observed_s",
                     "fraction"],
}
# Tables whose contract list ends in "..." (more columns allowed after these).
OPEN_ENDED = {"requests"}
# docs/interfaces.md: "Add freely". The one documented addition: the nginx worker process whose
# own failure state marked the backend down (docs/model.md, nginx, no `zone`).
ADDED = {"detections": ["worker"]}
OUTCOMES = {"ok", "refused", "timeout", "reset", "error"}


@cache
def local_lb_crash():
    """scenarios/local-lb.yaml: nginx on every node, m[0] crashes at 60 s for 5 min (7 min
    run). With its 10 min proxy_timeout no node's nginx would ever route a connection to
    the dead master (least_conn's tie-break sends the redials elsewhere: docs/model.md, nginx), so
    nothing would be detected; a 5 s proxy_timeout makes connections churn (KS #655)."""
    sc = hasim.load_scenario(SCENARIOS / "local-lb.yaml").with_overrides(
        {"duration": "7m", "balancers.local.proxy_timeout": "5s"})
    return hasim.simulate(sc, seed=0)


@pytest.mark.parametrize("table", sorted(COLUMNS))
def test_table_columns(table):
    df = getattr(local_lb_crash(), table)
    cols = list(df.columns)
    if table in OPEN_ENDED:
        assert cols[: len(COLUMNS[table])] == COLUMNS[table]
    else:
        assert cols == COLUMNS[table] + ADDED.get(table, [])
    assert len(df) > 0  # the crash produced rows in every table


def test_table_values_follow_the_contract():
    res = local_lb_crash()
    assert set(res.requests["outcome"]) <= OUTCOMES
    assert {"ok", "reset"} <= set(res.requests["outcome"])  # the crash resets sessions
    assert set(res.health_checks["kind"]) <= {"active", "passive", "connection"}
    hc = res.health_checks
    # rate = count over the simulated time (7 min)
    assert np.allclose(hc["rate_per_s"], hc["count"] / 420.0)
    # one row per (source, target, kind), in the order of those keys, index 0..n-1
    keys = list(zip(hc["source"], hc["target"], hc["kind"], strict=True))
    assert keys == sorted(set(keys)) and list(hc.index) == list(range(len(hc)))
    assert len({s for s, _, _ in keys}) > 1 and len({t for _, t, _ in keys}) > 1
    av = res.availability
    assert np.allclose(av["fraction"], av["available_s"] / av["observed_s"])
    assert ((av["fraction"] >= 0) & (av["fraction"] <= 1)).all()
    det = res.detections
    assert np.allclose(det["detect_s"], det["detected_at"] - 60.0)  # the fault is at 60 s
    assert (det["backend"] == "master1").all()
    st = res.state_changes
    assert {"not-ready", "ready"} <= set(st["to"])  # master1's own kubelet died and came back
    ns = res.node_status
    closed = ns["ready_at"].notna()
    assert np.allclose(ns.loc[closed, "duration_s"],
                       ns.loc[closed, "ready_at"] - ns.loc[closed, "not_ready_at"])


def test_summary_has_events_and_wall_time():
    s = local_lb_crash().summary
    assert isinstance(s["events"], int) and s["events"] > 0
    assert isinstance(s["wall_s"], float) and s["wall_s"] > 0


# --- failovers semantics on constructed records ------------------------------------------------

def _recorder() -> tuple[Recorder, dict[str, tuple[str, str]]]:
    rec = Recorder()
    # fault 0: m1 crashes at 10 s (its kubelet with it); fault 1: x powered off at 50 s.
    rec.faults += [
        FaultRecord(0, "crash", "m1", 10.0, None, frozenset({"m1"}),
                    frozenset({("m1", "apiserver"), ("m1", "kubelet")})),
        FaultRecord(1, "poweroff", "x", 50.0, 80.0, frozenset({"x"}),
                    frozenset({("x", "apiserver")})),
    ]
    R = rec.request
    R("a/kubelet", "a", 5.0, 5.1, "ok", "m1", "lease")  # never fails
    R("a/kubelet", "a", 15.0, 15.1, "ok", "m2", "lease")
    R("b/kubelet", "b", 5.0, 5.1, "ok", "m1", "lease")  # fails at 12, back at 22.5
    R("b/kubelet", "b", 12.0, 22.0, "timeout", "m1", "lease")
    R("b/kubelet", "b", 22.0, 22.5, "ok", "m2", "lease")
    R("c/kubelet", "c", 5.0, 5.1, "ok", "m1", "lease")  # fails for good
    R("c/kubelet", "c", 11.0, 11.001, "refused", "", "lease")
    R("c/kubelet", "c", 21.0, 21.001, "refused", "", "lease")
    R("d/kubelet", "d", 9.0, 19.0, "timeout", "m1", "lease")  # in flight at the fault
    R("d/kubelet", "d", 19.0, 19.5, "ok", "m2", "lease")
    R("e/kubelet", "e", 1.0, 8.0, "timeout", "m1", "lease")  # failed BEFORE the fault
    R("e/kubelet", "e", 8.0, 8.1, "ok", "m1", "lease")
    R("f/kubelet", "f", 60.0, 70.0, "timeout", "x", "lease")  # fails in fault 1's window
    R("f/kubelet", "f", 70.0, 70.5, "ok", "m2", "lease")
    R("g/kubelet", "g", 85.0, 86.0, "reset", "m2", "lease")  # fails only after x healed at 80
    R("g/kubelet", "g", 86.0, 86.5, "ok", "m2", "lease")
    R("h/kubelet", "h", 75.0, 85.0, "timeout", "x", "lease")  # in flight at the heal
    R("h/kubelet", "h", 85.0, 85.5, "ok", "m2", "lease")
    R("m1/kubelet", "m1", 5.0, 5.1, "ok", "m1", "lease")  # the fault's own process
    clients = {f"{h}/kubelet": (h, "kubelet") for h in "abcdefgh"}
    clients["m1/kubelet"] = ("m1", "kubelet")
    return rec, clients


def test_failovers_semantics_on_constructed_records():
    rec, clients = _recorder()
    fo = failovers(rec, clients, duration=100.0)
    assert list(fo.columns) == COLUMNS["failovers"]
    f0 = fo[fo["fault_id"] == 0].set_index("client")
    # The crashed host's own kubelet is the fault, not a victim.
    assert "m1/kubelet" not in f0.index
    assert sorted(f0.index) == [f"{h}/kubelet" for h in "abcdefgh"]
    assert (f0["fault_kind"] == "crash").all() and (f0["fault_at"] == 10.0).all()
    assert (f0["target"] == "m1").all()
    # never failed: latency 0, no failure, no recovery
    for c in ("a/kubelet", "e/kubelet", "f/kubelet", "g/kubelet", "h/kubelet"):
        assert f0.loc[c, "latency_s"] == 0.0
        assert math.isnan(f0.loc[c, "first_failure_at"])
        assert math.isnan(f0.loc[c, "recovered_at"])
    # failed at 12, recovered at the end of the next ok request: latency = 22.5 - 10
    assert f0.loc["b/kubelet", "first_failure_at"] == 12.0
    assert f0.loc["b/kubelet", "recovered_at"] == 22.5
    assert f0.loc["b/kubelet", "latency_s"] == 22.5 - 10.0
    # never recovered before the end: inf
    assert f0.loc["c/kubelet", "first_failure_at"] == 11.0
    assert math.isinf(f0.loc["c/kubelet", "recovered_at"])
    assert math.isinf(f0.loc["c/kubelet", "latency_s"])
    # a request in flight at the fault fails "at the fault": max(start, fault_at)
    assert f0.loc["d/kubelet", "first_failure_at"] == 10.0
    assert f0.loc["d/kubelet", "latency_s"] == 19.5 - 10.0
    # fault 1: only f failed within its window
    f1 = fo[fo["fault_id"] == 1].set_index("client")
    assert f1.loc["f/kubelet", "latency_s"] == 70.5 - 50.0
    assert f1.loc["f/kubelet", "first_failure_at"] == 60.0
    # A failure that starts after the fault healed is the failback's, not the failover's
    # (it would have read 86.5 - 50); one in flight at the heal is the fault's.
    assert f1.loc["g/kubelet", "latency_s"] == 0.0
    assert math.isnan(f1.loc["g/kubelet", "first_failure_at"])
    assert f1.loc["h/kubelet", "first_failure_at"] == 75.0
    assert f1.loc["h/kubelet", "latency_s"] == 85.5 - 50.0
    assert (f1.drop(index=["f/kubelet", "c/kubelet", "h/kubelet"])["latency_s"] == 0.0).all()


def test_a_failback_is_not_counted_as_the_failover():
    """scenarios/modes/external-keepalived.yaml: the VIP holder extlb1 crashes at 60 s for
    5 min; keepalived preempts (docs/model.md, the VIP), so the VIP moves to extlb2 and back at the
    heal, and the second move resets every connection through the VIP again. Those
    failures are the failback's: no failover row starts after the heal, though clients
    did fail then (in the requests table)."""
    sc = hasim.load_scenario(SCENARIOS / "modes" / "external-keepalived.yaml")
    r = hasim.simulate(sc, seed=0)
    heal = 60.0 + 300.0
    assert list(r.vip_moves["from"]) == ["extlb1", "extlb2"]  # over, then back at the heal
    assert r.vip_moves["time"].iloc[1] >= heal
    req = r.requests
    assert (req.loc[req["start"] >= heal, "outcome"] != "ok").any()  # the failback hurt
    cut = r.failovers[r.failovers["latency_s"] > 0]
    assert len(cut) > 0 and (cut["first_failure_at"] < heal).all()
    # All of them met the first move: stalled until it, then reconnected.
    assert (cut["recovered_at"] > r.vip_moves["time"].iloc[0]).all()
    assert (cut["recovered_at"] < heal).all()


def test_node_status_intervals_on_constructed_records():
    rec = Recorder()
    rec.state(30.0, "node-lifecycle", "n1", "Ready", "ready", "not-ready", "x")
    rec.state(45.0, "node-lifecycle", "n1", "Ready", "not-ready", "ready", "x")
    rec.state(50.0, "node-lifecycle", "n2", "Ready", "ready", "not-ready", "x")
    ns = node_status(rec, duration=100.0)
    assert list(ns.columns) == COLUMNS["node_status"]
    rows = ns.set_index("host")
    assert rows.loc["n1", "duration_s"] == 15.0 and rows.loc["n1", "ready_at"] == 45.0
    # still NotReady at the end: no ready_at, duration up to the end of the run
    assert math.isnan(rows.loc["n2", "ready_at"]) and rows.loc["n2", "duration_s"] == 50.0


# --- scale smoke --------------------------------------------------------------------------------

def test_scale_smoke_1000_nodes_local_nginx():
    """1,000 nodes behind their local nginx for 10 simulated minutes, one master crash.
    Speed goals belong to benchmarks/: the wall time is printed, not asserted."""
    sc = hasim.load_scenario(SCENARIOS / "local-lb.yaml").with_overrides(
        {"cluster.generate.nodes": 1000, "duration": "10m"})
    res = hasim.simulate(sc, seed=0)
    s = res.summary
    print(f"\nscale smoke: {s['hosts']} hosts, {s['events']} events, "
          f"{s['wall_s']:.1f} s wall")
    assert s["events"] > 0
    assert s["nodes"] >= 1000
    # every worker kubelet went through its nginx to an apiserver
    req = res.requests
    assert req[req["client"].str.endswith("/kubelet")]["client"].nunique() >= 1000
