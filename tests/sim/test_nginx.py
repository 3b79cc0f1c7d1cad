"""nginx's ``stream`` proxy against docs/model.md, nginx and nginx's own source
(``src/stream/ngx_stream_upstream_round_robin.c``, ``..._least_conn_module.c``,
``ngx_stream_proxy_module.c``).

Every expected value below is a formula of docs/model.md or a consequence of nginx's code,
written next to the assertion; none comes from an earlier hasim run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import simpy

import hasim
from hasim.sim.network import Network
from hasim.sim.nginx import NginxProxy, NginxUpstream
from hasim.sim.records import Recorder
from hasim.spec.scenario import NginxSpec, scenario_from_dict

RTT = 0.0005  # NetworkSpec default
SERVICE = 0.002  # ApiserverSpec default
#: A new client connection through the local nginx: nginx->apiserver connect (1 RTT),
#: then the request over two hops (2 RTTs) and its service time. A connection whose first
#: pick was a dead (refusing) server costs one RTT more before proxy_next_upstream.
NEW_CONN = 3 * RTT + SERVICE
NEW_CONN_AFTER_REFUSAL = 4 * RTT + SERVICE
API_KINDS = ["register", "lease", "status", "list"]
#: Stands in for "no fault" (see tests/sim/test_haproxy.py: hasim.simulate fails on a run
#: without any fault); two workers, which never talk to each other, lose their link.
NO_OP_FAULT: dict[str, Any] = {"at": "1s", "kind": "partition", "target": "node1",
                               "peers": "node2"}


def local_nginx(nginx: dict[str, Any], nodes: int, faults: list[dict[str, Any]],
                duration: float, clients: dict[str, Any] | None = None) -> hasim.Scenario:
    raw: dict[str, Any] = {
        "name": "nginx-local",
        "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": nodes},
                    "vars": {"loadbalancer_apiserver_localhost": True}},
        "balancers": {"local": {"kind": "nginx", **nginx}},
        "faults": faults,
        "duration": f"{duration}s",
    }
    if clients:
        raw["clients"] = clients
    return scenario_from_dict(raw)


def rows(res: Any, kind: str, target: str | None = None) -> pd.DataFrame:
    hc = res.health_checks
    hc = hc[hc["kind"] == kind]
    return hc if target is None else hc[hc["target"] == target]


def node_api_requests(res: Any, nodes: int) -> pd.DataFrame:
    """Kubelet and kube-proxy requests on the worker nodes (those behind a local nginx)."""
    rq = res.requests
    hosts = [f"node{i}" for i in range(1, nodes + 1)]
    rq = rq[rq["kind"].isin(API_KINDS) & rq["host"].isin(hosts)].copy()
    rq["dur"] = rq["end"] - rq["start"]
    return rq


# -- 6. NginxUpstream against nginx's source -------------------------------------------------


def test_least_conn_ties_go_first_then_second_then_third() -> None:
    # All conns equal (each connection ends before the next): the tie is broken by smooth
    # WRR, current_weight += effective_weight, highest wins (the FIRST on equality),
    # winner -= total. Weights 1,1,1: 0, 1, 2, 0, 1, 2.
    up = NginxUpstream(3, max_fails=1, fail_timeout=10, balance="least_conn")
    picks = []
    for _ in range(6):
        i = up.select(100, set())
        assert i is not None
        picks.append(i)
        up.free(i, 100, failed=False)
    assert picks == [0, 1, 2, 0, 1, 2]


def test_least_conn_prefers_fewest_connections() -> None:
    up = NginxUpstream(3, max_fails=1, fail_timeout=10, balance="least_conn")
    held = [up.select(100, set()) for _ in range(3)]  # kept open
    assert held == [0, 1, 2]
    up.free(1, 100, failed=False)  # server 1 now holds the fewest
    assert up.select(100, set()) == 1


def test_round_robin_rotates_whatever_the_connections() -> None:
    up = NginxUpstream(3, max_fails=1, fail_timeout=10, balance="round_robin")
    assert [up.select(100, set()) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def _fail(up: NginxUpstream, i: int, now: int) -> None:
    """A connection routed to peer ``i`` that fails to connect at ``now``."""
    assert up.select(now, {j for j in range(len(up.peers)) if j != i}) == i
    up.free(i, now, failed=True)


def test_skip_rule_uses_whole_seconds() -> None:
    ft = 10
    up = NginxUpstream(3, max_fails=1, fail_timeout=ft, balance="least_conn")
    _fail(up, 0, 100)
    p = up.peers[0]
    assert p.fails == 1 and p.checked == p.accessed == 100
    # Skipped while fails >= max_fails and now - checked <= fail_timeout: ngx_time()
    # 100..110 inclusive, i.e. up to fail_timeout + 1 s after a failure late in second 100.
    for now in range(100, 100 + ft + 1):
        assert up.skipped(p, now), now
    assert not up.skipped(p, 100 + ft + 1)
    # The skip holds in select(): with peer 0 holding the fewest connections it still gets
    # nothing until second 111.
    up.select(100, {0, 2})
    up.select(100, {0, 1})  # servers 1 and 2 now hold one connection each
    for now in (101, 105, 110):
        i = up.select(now, set())
        assert i in (1, 2)
        up.free(i, now, failed=False)


def test_whole_second_clock_of_the_proxy() -> None:
    env = simpy.Environment()
    rec = Recorder()
    net = Network(env, RTT, rec)
    proxy = NginxProxy(env, net, rec, "node1", [("master1", "apiserver")], NginxSpec(),
                       np.random.default_rng(0), clock_phase=0.25)
    # ngx_time() is the wall clock cut to whole seconds: floor(now + phase).
    env.run(until=10.74)
    assert proxy.ngx_time() == 10
    env.run(until=10.75)
    assert proxy.ngx_time() == 11


def test_first_connection_after_fail_timeout_is_the_probe() -> None:
    ft = 10
    up = NginxUpstream(3, max_fails=1, fail_timeout=ft, balance="least_conn")
    _fail(up, 0, 100)
    up.select(100, {0, 2})
    up.select(100, {0, 1})  # 1 and 2 hold a connection: 0 is the least loaded
    probe_at = 100 + ft + 1
    assert up.select(probe_at, set()) == 0
    # now - checked > fail_timeout: checked = now, so while the probe is out every other
    # new connection skips the server again (one probe, not a stampede).
    assert up.peers[0].checked == probe_at and up.peers[0].accessed == 100
    assert up.select(probe_at, set()) in (1, 2)


def test_failed_probe_skips_for_another_fail_timeout() -> None:
    ft = 10
    up = NginxUpstream(3, max_fails=1, fail_timeout=ft, balance="least_conn")
    _fail(up, 0, 100)
    probe_at = 100 + ft + 1
    up.peers[1].conns = up.peers[2].conns = 1  # 0 is the least loaded
    assert up.select(probe_at, set()) == 0
    up.free(0, probe_at, failed=True)
    p = up.peers[0]
    assert p.fails == 2 and p.checked == p.accessed == probe_at
    assert up.skipped(p, probe_at + ft)
    assert not up.skipped(p, probe_at + ft + 1)


def test_success_resets_fails_only_after_a_probe() -> None:
    ft = 10
    # A session to peer 0 opened while it was healthy ends after a failure of another
    # connection: accessed == checked, so fails stay (nginx: "mark peer live if check
    # passed" only when accessed < checked).
    up = NginxUpstream(3, max_fails=1, fail_timeout=ft, balance="least_conn")
    assert up.select(90, set()) == 0
    _fail(up, 0, 100)
    up.free(0, 105, failed=False)
    assert up.peers[0].fails == 1 and up.skipped(up.peers[0], 105)
    # A successful probe (checked moved to the probe's second, accessed still at the
    # failure) resets fails.
    up.peers[1].conns = up.peers[2].conns = 1
    assert up.select(111, set()) == 0
    up.free(0, 112, failed=False)
    assert up.peers[0].fails == 0 and not up.skipped(up.peers[0], 112)


def test_all_skipped_returns_none_and_marks_all_live() -> None:
    up = NginxUpstream(3, max_fails=1, fail_timeout=10, balance="least_conn")
    for i in range(3):
        _fail(up, i, 100)
    assert all(up.skipped(p, 101) for p in up.peers)
    # "all peers failed, mark them as live for quick recovery": no live upstreams now,
    # and every fails counter back to 0, so the next connection gets a server.
    assert up.select(101, set()) is None
    assert [p.fails for p in up.peers] == [0, 0, 0]
    assert up.select(101, set()) is not None


@pytest.mark.parametrize("balance", ["least_conn", "round_robin"])
def test_single_server_is_never_marked_down(balance: str) -> None:
    up = NginxUpstream(1, max_fails=1, fail_timeout=10, balance=balance)
    for now in (100, 100, 101):
        assert up.select(now, set()) == 0
        assert up.free(0, now, failed=True) is False
    assert up.peers[0].fails == 0 and not up.skipped(up.peers[0], 101)
    assert up.select(101, {0}) is None  # one try per session (tries = 1)


def test_max_fails_counts_and_zero_disables() -> None:
    up = NginxUpstream(3, max_fails=2, fail_timeout=10, balance="least_conn")
    _fail(up, 0, 100)
    assert not up.skipped(up.peers[0], 100)  # 1 < max_fails
    _fail(up, 0, 100)
    assert up.skipped(up.peers[0], 100)
    off = NginxUpstream(3, max_fails=0, fail_timeout=10, balance="least_conn")
    for _ in range(5):
        _fail(off, 0, 100)
    assert not off.skipped(off.peers[0], 100)


# -- 7. no active checks; detection at the first connection --------------------------------


def test_healthy_cluster_gets_no_health_checks_from_nginx() -> None:
    res = hasim.simulate(local_nginx({}, 10, [NO_OP_FAULT], 600.0), seed=1)
    # nginx OSS has no active checks (docs/model.md, nginx, KS #2091): nothing but the clients'
    # own connections reaches an apiserver; with every server up nothing is re-probed.
    assert rows(res, "active").empty
    assert rows(res, "passive").empty
    assert res.summary["active_checks_per_s"] == 0.0
    assert rows(res, "connection")["count"].sum() >= 2 * 10  # kubelet + kube-proxy per node
    assert res.detections.empty


def test_crashed_master_detected_at_the_first_connection() -> None:
    nodes = 12
    res = hasim.simulate(local_nginx({}, nodes, [{"at": "0s", "target": "master1/apiserver",
                                                  "kind": "crash"}], 60.0), seed=2)
    rq = node_api_requests(res, nodes)
    first = rq.sort_values("start").groupby("host").first()
    det = res.detections.set_index("host")
    # least_conn on a fresh worker sends the first connection to the FIRST server
    # (master1), on every node: every node's nginx detects master1 at its first
    # connection, refused one RTT after it was dialled.
    assert sorted(det.index) == sorted(first.index) and len(det) == nodes
    assert (det["backend"] == "master1").all()
    assert np.allclose(det.loc[first.index, "detected_at"], first["start"] + RTT, atol=1e-9)
    # proxy_next_upstream: the same client connection goes on to the next pick, the
    # second server (smooth WRR among the two tied peers left), one RTT later.
    assert (first["backend"] == "master2").all()
    assert np.allclose(first["dur"], NEW_CONN_AFTER_REFUSAL, atol=1e-9)
    st = res.state_changes
    downs = st[st["component"].str.match(r"^lb\[w\d+\]$") & (st["to"] == "down")]
    assert set(downs["subject"]) == {"master1"}
    assert (downs["cause"] == "connect refused").all()
    # Each detection is that worker's first failed connection: a `connection` row, no probe.
    assert (rows(res, "connection", "master1/apiserver")["count"] >= 1).all()


def test_midrun_crash_detected_only_when_a_connection_is_routed_to_it() -> None:
    nodes = 12
    at = 60.0
    res = hasim.simulate(local_nginx({"proxy_timeout": "1s"}, nodes,
                                     [{"at": f"{at}s", "target": "master1/apiserver",
                                       "kind": "crash"}], 120.0), seed=2)
    assert rows(res, "active").empty
    rq = res.requests  # every request, re-opened watches included (client-go reflector)
    det = res.detections
    assert len(det) >= 1
    # Every detection is a refusal one RTT after a client connection was dialled through
    # that node's nginx, after the crash.
    for _, d in det.iterrows():
        starts = rq.loc[rq["host"] == d["host"], "start"].to_numpy()
        assert np.isclose(starts, d["detected_at"] - RTT, atol=1e-9, rtol=0).any()
        assert d["detected_at"] > at


# -- 8. passive re-probe load on a dead server --------------------------------------------


@pytest.mark.parametrize("fail_timeout", [10, 30])
def test_reprobe_load_never_exceeds_the_bound(fail_timeout: int) -> None:
    nodes, workers = 10, 2
    duration = 20 * (fail_timeout + 1) + 5
    res = hasim.simulate(local_nginx({"fail_timeout": f"{fail_timeout}s",
                                      "proxy_timeout": "1s", "workers": workers}, nodes,
                                     [{"at": "0s", "target": "master1/apiserver",
                                       "kind": "crash"}], duration), seed=3)
    probes = rows(res, "passive", "master1/apiserver").set_index("source")["count"]
    det = res.detections.set_index("host")["detected_at"]
    assert len(probes) > 0
    # docs/model.md, closed forms: at most workers x nodes / fail_timeout per second.
    assert probes.sum() / duration <= workers * nodes / fail_timeout
    # Exactly, with the whole-second clock: each worker probes at ngx seconds c_k with
    # c_{k+1} >= c_k + fail_timeout + 1, the first at least that long after its first
    # failure (no earlier than the node's first detection, minus 1 s of clock rounding).
    for source, n in probes.items():
        host = source.split("/")[0]
        per_worker = math.floor((duration - det[host] + 1) / (fail_timeout + 1))
        assert n <= workers * per_worker, source


@pytest.mark.parametrize("reuseport", [False, True])
def test_which_worker_accepts(reuseport: bool) -> None:
    # Without `reuseport` the kernel wakes the first idle worker (EPOLLEXCLUSIVE): one
    # worker learns of the dead master and probes it; with it, connections are hashed over
    # both workers and each keeps its own failure state (no `zone`), so both learn of it.
    nodes = 6
    res = hasim.simulate(local_nginx({"proxy_timeout": "1s", "workers": 2,
                                      "reuseport": reuseport}, nodes,
                                     [{"at": "0s", "target": "master1/apiserver",
                                       "kind": "crash"}], 120.0), seed=5)
    st = res.state_changes
    downs = st[st["component"].str.match(r"^lb\[w\d+\]$") & (st["to"] == "down")]
    per_node = downs.groupby("host")["component"].nunique()
    assert len(per_node) == nodes
    if reuseport:
        assert (per_node == 2).all()
    else:
        assert set(downs["component"]) == {"lb[w0]"}


def test_reprobe_load_reaches_the_bound_with_frequent_connections() -> None:
    # Frequent new connections: nginx idle-closes every session after 100 ms and
    # kube-proxy re-lists after a 0.1-0.2 s backoff, so every node opens a few
    # connections per second. (clients.disable_http2 would not help here: in hasim it only
    # makes a TIMED-OUT request drop its connection.) One worker per node, so every probe
    # of a node is the same worker's and the probe times can be read off its requests.
    ft = 60  # 1/(ft+1) is 1.6 % below 1/ft, inside the 5 % the bound must be reached by
    nodes, duration = 4, 1300.0
    res = hasim.simulate(local_nginx({"fail_timeout": f"{ft}s", "proxy_timeout": "100ms",
                                      "workers": 1}, nodes,
                                     [{"at": "0s", "target": "master1/apiserver",
                                       "kind": "crash"}], duration,
                                     clients={"watch_backoff_initial": "100ms"}), seed=4)
    rq = node_api_requests(res, nodes)
    probes = rows(res, "passive", "master1/apiserver").set_index("source")["count"]
    firsts = rows(res, "connection", "master1/apiserver").set_index("source")["count"]
    gaps = []
    for i in range(1, nodes + 1):
        host = f"node{i}"
        mine = rq[rq["host"] == host]
        # Connections whose first pick was master1 (refused, then the next server).
        refused_first = np.sort(mine.loc[np.isclose(mine["dur"], NEW_CONN_AFTER_REFUSAL,
                                                    atol=1e-9, rtol=0), "start"].to_numpy())
        # The worker's first failure is a `connection` row, every later one a probe.
        assert firsts[f"{host}/lb"] == 1
        assert len(refused_first) == 1 + probes[f"{host}/lb"]
        g = np.diff(refused_first[1:])
        # ngx seconds between probes >= ft + 1, so real time between them > ft.
        assert (g > ft).all(), host
        gaps.append(g)
    all_gaps = np.concatenate(gaps)
    assert len(all_gaps) >= 4 * 15
    mean_gap = float(all_gaps.mean())
    # Exact per-worker maximum under frequent connections: one probe per ft + 1 ngx
    # seconds (the mean of n real gaps can undercut that by at most 1/n s of rounding).
    assert mean_gap >= ft + 1 - 1 / len(all_gaps) - 1e-9
    assert 1 / mean_gap == pytest.approx(1 / (ft + 1), rel=0.05)
    # ... and the docs/model.md bound 1/fail_timeout per worker is reached within 5 %.
    assert 1 / mean_gap >= 0.95 / ft


# -- 9. proxy_timeout 3s (KS #655) --------------------------------------------------------


def test_proxy_timeout_3s_multiplies_connection_churn() -> None:
    nodes, duration = 5, 600.0
    rates = {}
    for pt in ("3s", "10m"):
        res = hasim.simulate(local_nginx({"proxy_timeout": pt}, nodes, [NO_OP_FAULT],
                                         duration), seed=6)
        conn = rows(res, "connection")
        assert conn["source"].nunique() == nodes
        rates[pt] = conn.groupby("source")["count"].sum() / duration
    # Lower bound per node with proxy_timeout 3 s, from the clients (docs/model.md, clients):
    # - kube-proxy lists (a few ms), its watch is idle, nginx closes it 3 s later; the
    #   stream ended (a FIN after more than 1 s), so client-go's reflector opens the next
    #   watch at once on a new connection: one connection per at most 3 + 0.01 s, from its
    #   start at <= 10 s.
    # - the kubelet sends a lease every 10 x [1, 1.04) s and a status every 10 s: between
    #   two leases (<= 10.4 s apart) there are at most two status requests, so one of the
    #   <= 3 gaps is >= 10/3 s > 3 s: at least one new connection per lease period, from
    #   its first lease at <= 11 s.
    proxy_cycle, lease_period = 3 + 0.01, 10.4 + 0.01
    lower = ((duration - 10) / proxy_cycle - 1 + (duration - 11) / lease_period - 1) / duration
    # Upper bound: kube-proxy's cycles take >= 3 s; the kubelet opens at most one
    # connection per request: register + leases + statuses, each loop every >= 10 s.
    upper = ((duration / 3 + 1) + 1 + 2 * (duration / 10 + 1)) / duration
    assert (rates["3s"] >= lower).all(), (rates["3s"].min(), lower)
    assert (rates["3s"] <= upper).all(), (rates["3s"].max(), upper)
    # With 10 min the two clients' connections live on (HTTP/2 pings every 30 s keep
    # them from going idle): about one connection per client per run.
    assert (rates["10m"] <= 4 / duration).all()
    assert rates["3s"].min() >= 10 * rates["10m"].max()


def test_over_http1_every_watch_is_its_own_connection_ks655() -> None:
    """KS #655 (Kubernetes 1.4, HTTP/1.1 clients): "about 5 connections per node"
    re-handshaking every 3 s. Over HTTP/1.1 the kubelet's pods, node and services watches
    and kube-proxy's services and endpoints watches are a connection each
    (hasim.sim.clients.KUBELET_WATCHES, KUBE_PROXY_WATCHES), each cut by nginx 3 s after
    its last byte and re-opened at once: 5 connections per 3 s, plus the heartbeats'."""
    nodes, duration = 5, 600.0
    res = hasim.simulate(local_nginx({"proxy_timeout": "3s"}, nodes, [NO_OP_FAULT], duration,
                                     clients={"disable_http2": True}), seed=6)
    per_3s = rows(res, "connection").groupby("source")["count"].sum() / duration * 3
    watches = 3 + 2
    # Each watch cycles in [3, 3.01] s from its start (the kubelet's at <= 1 s,
    # kube-proxy's at <= 10 s); the heartbeats add at most one connection per request:
    # register, and a lease and a status every >= 10 s.
    lower = ((3 * (duration - 1) + 2 * (duration - 10)) / 3.01 - watches) / duration * 3
    upper = (watches * (duration / 3 + 1) + 1 + 2 * (duration / 10 + 1)) / duration * 3
    assert (per_3s >= lower).all(), (per_3s.min(), lower)
    assert (per_3s <= upper).all(), (per_3s.max(), upper)
    assert lower > 4.9  # "about 5 connections per node", as reported

