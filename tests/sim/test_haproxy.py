"""HAProxy against docs/model.md, HAProxy and HAProxy's own source (``src/check.c``,
``src/backend.c``, ``include/haproxy/stream.h``).

Every expected value below is a formula of docs/model.md or a consequence of HAProxy's code,
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
from hasim.sim.haproxy import HAProxy, HealthCounter
from hasim.sim.network import Network
from hasim.sim.records import Recorder
from hasim.spec.scenario import LocalHAProxySpec, scenario_from_dict

RTT = 0.0005  # NetworkSpec default: one LAN round trip
SERVICE = 0.002  # ApiserverSpec default: time to serve one request
#: A healthy ``httpchk`` + ``check-ssl`` check: TCP connect (1 RTT), TLS handshake
#: (2 RTTs), GET /healthz (1 RTT). The sim leaves /healthz's own serve time out; it is
#: 0.1 % of ``inter`` at most, far inside every tolerance below.
D_OK_HTTPCHK = 4 * RTT
#: ``ssl-hello-chk``: connect, then the hello exchange.
D_OK_SSLHELLO = 3 * RTT
Z = 4.0  # the sample mean must sit this many standard errors inside the tolerance

#: HAProxy's own defaults (docs/model.md, HAProxy: inter 2 s, fastinter = downinter = inter,
#: rise 2, fall 3, no ``timeout connect`` nor ``timeout check``).
HAPROXY_DEFAULTS: dict[str, Any] = {
    "kind": "haproxy",
    "inter": "2s",
    "fastinter": None,
    "downinter": None,
    "rise": 2,
    "fall": 3,
    "timeout_connect": None,
    "timeout_check": None,
}
#: kubespray's local haproxy: the LocalHAProxySpec defaults (inter 15 s, fall 2, timeout
#: connect/check 30 s).
KUBESPRAY_LOCAL: dict[str, Any] = {"kind": "haproxy"}


def local_lb(lb: dict[str, Any], nodes: int, faults: list[dict[str, Any]], duration: float
             ) -> hasim.Scenario:
    return scenario_from_dict({
        "name": "haproxy-local",
        "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": nodes},
                    "vars": {"loadbalancer_apiserver_localhost": True}},
        "balancers": {"local": lb},
        "faults": faults,
        "duration": f"{duration}s",
    })


def external_lb(lb: dict[str, Any], faults: list[dict[str, Any]], duration: float,
                nodes: int = 6) -> hasim.Scenario:
    """The 2016 HA doc's external LB example: every host reaches the apiservers through it."""
    return scenario_from_dict({
        "name": "haproxy-external",
        "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": nodes},
                    "vars": {"loadbalancer_apiserver": {"address": "10.0.0.100", "port": 8383}}},
        "balancers": {"external": lb},
        "faults": faults,
        "duration": f"{duration}s",
    })


#: A fault that touches nothing the balancers see: two workers, which never talk to each
#: other, lose their link. It stands in for "no fault" because ``hasim.simulate`` fails on
#: a run without any fault (``metrics.build_result``: ``np.isfinite`` on the empty,
#: object-typed ``failovers.latency_s`` column).
NO_OP_FAULT: dict[str, Any] = {"at": "1s", "kind": "partition", "target": "node1",
                               "peers": "node2"}


def api_requests(res: Any) -> pd.DataFrame:
    """The apiserver requests of kubelets and kube-proxies (not flannel's etcd ones)."""
    rq = res.requests
    rq = rq[rq["kind"].isin(["register", "lease", "status", "list", "watch"])].copy()
    rq["dur"] = rq["end"] - rq["start"]
    return rq


def checks(res: Any, kind: str) -> pd.DataFrame:
    hc = res.health_checks
    return hc[hc["kind"] == kind]


# -- 1. check.c's health counter and interval --------------------------------------------


def test_health_counter_starts_up_going_down() -> None:
    # srv_settings_cpy: health = rise, "up, but will fall down at first failure".
    c = HealthCounter(rise=2, fall=3)
    assert c.health == 2 and c.up and c.full == 2 + 3 - 1
    # One failure from `rise`: health 1 < rise -> jump to 0, DOWN.
    assert c.report(False) == "down"
    assert c.health == 0 and not c.up
    # Failing at 0 stays at 0 (check.c only decrements while health > 0).
    assert c.report(False) is None and c.health == 0


def test_health_counter_falls_after_fall_failures_from_full() -> None:
    c = HealthCounter(rise=2, fall=3)
    c.health = c.full  # 4
    # full -> 3 -> 2 stay UP (>= rise); the third failure takes it below rise -> 0.
    assert c.report(False) is None and c.health == 3 and c.up
    assert c.report(False) is None and c.health == 2 and c.up
    assert c.report(False) == "down" and c.health == 0


def test_health_counter_rises_after_rise_passes() -> None:
    c = HealthCounter(rise=2, fall=3)
    c.health = 0
    # 0 -> 1 stays DOWN; reaching rise (2) jumps to full (rise + fall - 1 = 4), UP.
    assert c.report(True) is None and c.health == 1 and not c.up
    assert c.report(True) == "up" and c.health == 4
    # Passing at full stays at full.
    assert c.report(True) is None and c.health == 4


def test_health_counter_kubespray_rise2_fall2() -> None:
    c = HealthCounter(rise=2, fall=2)
    assert c.full == 3
    assert c.report(True) is None and c.health == 3  # one pass from `rise` reaches full
    assert c.report(False) is None and c.health == 2  # fall - 1 failures keep it UP
    assert c.report(False) == "down" and c.health == 0


def _instance(**spec: Any) -> HAProxy:
    env = simpy.Environment()
    rec = Recorder()
    net = Network(env, RTT, rec)
    servers = [(f"master{i}", "apiserver") for i in (1, 2, 3)]
    for s in servers:
        net.add_process(s)
    return HAProxy(env, net, rec, "node1", "lb", servers, LocalHAProxySpec(**spec),
                   np.random.default_rng(0))


@pytest.mark.parametrize(
    ("spec", "inter", "fastinter", "downinter"),
    [
        ({"inter": 2.0, "fastinter": 0.5, "downinter": 7.0}, 2.0, 0.5, 7.0),
        # Unset fastinter/downinter fall back to inter (srv_getinter).
        ({"inter": 2.0, "fastinter": None, "downinter": None}, 2.0, 2.0, 2.0),
    ],
)
def test_interval_choice(spec: dict[str, Any], inter: float, fastinter: float,
                         downinter: float) -> None:
    hp = _instance(rise=2, fall=3, **spec)
    srv = hp.servers[0]
    # srv_getinter: full health -> inter; health 0 (DOWN) -> downinter; else fastinter.
    expected = {4: inter, 0: downinter, 1: fastinter, 2: fastinter, 3: fastinter}
    for health, interval in expected.items():
        srv.counter.health = health
        assert hp._interval(srv) == interval, health


# -- 2. detection time of a dead master ------------------------------------------------------


def _window(lb: dict[str, Any], fault: str) -> tuple[float, float, float, float]:
    """docs/model.md, HAProxy: (inter, fall, d, fi) for a fault kind under the given parameters."""
    spec = LocalHAProxySpec(**{k: v for k, v in lb.items() if k != "kind"})
    inter, fall = spec.inter, spec.fall
    fi = spec.fastinter or inter
    if fault == "crash":
        d = RTT  # refused after one round trip
    elif spec.timeout_check and spec.timeout_connect:
        d = min(spec.timeout_connect, inter)  # tcpcheck_eval_connect
    else:
        d = inter
    return inter, fall, d, fi


DETECTION_CASES = pytest.mark.parametrize(
    ("lb", "fault", "target", "window"),
    [
        (HAPROXY_DEFAULTS, "crash", "master1/apiserver", (4.0, 6.0)),
        (HAPROXY_DEFAULTS, "poweroff", "master1", (10.0, 12.0)),
        (KUBESPRAY_LOCAL, "crash", "master1/apiserver", (15.0, 30.0)),
        (KUBESPRAY_LOCAL, "poweroff", "master1", (45.0, 60.0)),
    ],
    ids=["defaults-refused", "defaults-blackholed", "kubespray-refused", "kubespray-blackholed"],
)


def _check_detection(lb: dict[str, Any], fault: str, target: str,
                     window: tuple[float, float], rel: float, seed: int) -> None:
    inter, fall, d, fi = _window(lb, fault)
    # T = U(0, inter) + fall*d + (fall-1)*fi   (docs/model.md, HAProxy)
    lo = fall * d + (fall - 1) * fi
    hi = inter + lo
    assert window[0] == pytest.approx(lo, abs=0.01) and window[1] == pytest.approx(hi, abs=0.01)
    mean = inter / 2 + lo
    # Sample size: sd of U(0, inter) is inter/sqrt(12); the mean must be within `rel` with
    # Z standard errors to spare: n >= (Z * inter/sqrt(12) / (rel * mean))^2.
    # At 3 %: defaults 237 refused, 49 blackholed; kubespray 659 refused, 121 blackholed.
    n_needed = math.ceil((Z * inter / math.sqrt(12) / (rel * mean)) ** 2)
    # Every node's HAProxy is an independent instance with its own check phase. The fault
    # comes after every server's first check (at most 2*inter), so all are at full health.
    at = 2 * inter + 5
    res = hasim.simulate(local_lb(lb, n_needed, [{"at": f"{at}s", "target": target,
                                                  "kind": fault}], at + hi + 5), seed=seed)
    det = res.detections
    det = det[det["backend"] == "master1"]
    assert len(det) == n_needed  # one detection per instance, no more, no fewer
    # The window, widened by one healthy check's duration: the check cycle is inter + d_ok
    # and a check in flight at the fault is judged by its end.
    slack = D_OK_HTTPCHK + 1e-9
    assert det["detect_s"].min() >= lo - slack
    assert det["detect_s"].max() <= hi + slack
    assert det["detect_s"].mean() == pytest.approx(mean, rel=rel)
    # The detection is recorded as an `lb` state change to down at the same time.
    st = res.state_changes
    downs = st[(st["component"] == "lb") & (st["subject"] == "master1") & (st["to"] == "down")]
    assert len(downs) == n_needed
    assert np.allclose(np.sort(downs["time"].to_numpy()),
                       np.sort(det["detected_at"].to_numpy()), atol=1e-9)


@DETECTION_CASES
def test_detection_time_window_and_mean(lb: dict[str, Any], fault: str, target: str,
                                        window: tuple[float, float]) -> None:
    _check_detection(lb, fault, target, window, rel=0.03, seed=11)


@pytest.mark.slow
@DETECTION_CASES
def test_detection_mean_within_one_percent(lb: dict[str, Any], fault: str, target: str,
                                           window: tuple[float, float]) -> None:
    # The same at 1 %: 2,133 / 441 / 5,925 / 1,089 instances.
    _check_detection(lb, fault, target, window, rel=0.01, seed=12)


# -- 3. active check rate --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lb", "duration"),
    [(HAPROXY_DEFAULTS, 600.0), (KUBESPRAY_LOCAL, 1800.0)],
    ids=["defaults", "kubespray"],
)
def test_active_check_rate(lb: dict[str, Any], duration: float) -> None:
    nodes = 20
    res = hasim.simulate(local_lb(lb, nodes, [NO_OP_FAULT], duration), seed=5)
    spec = LocalHAProxySpec(**{k: v for k, v in lb.items() if k != "kind"})
    inter = spec.inter
    cycle = inter + D_OK_HTTPCHK  # next check is scheduled when the current one ends
    active = checks(res, "active")
    backends = 3
    # The local LB runs on every non-master host (docs/model.md, the 2016 doc table): one instance
    # per node.
    assert active["source"].nunique() == nodes
    assert len(active) == nodes * backends
    # Per instance and backend: first check at phase + inter*pos/n, phase ~ U(0, inter),
    # then one every inter + d. Checks started in [0, D): floor((D - first)/cycle) + 1,
    # so between floor((D - 2*inter)/cycle) + 1 and D/cycle + 1.
    assert active["count"].min() >= math.floor((duration - 2 * inter) / cycle) + 1
    assert active["count"].max() <= duration / cycle + 1
    # Expected total over the uniform phase: sum over pos of
    # (D - inter/2 - inter*pos/n)/cycle + 1/2, times the instances.
    expected = nodes * sum((duration - inter / 2 - inter * pos / backends) / cycle + 0.5
                           for pos in range(backends))
    assert active["count"].sum() == pytest.approx(expected, rel=0.01)
    # docs/model.md, closed forms: (LB instances x backends) / (inter + d) per second, within 1 %.
    rate = active["count"].sum() / duration
    assert rate == pytest.approx(nodes * backends / cycle, rel=0.01)
    assert res.summary["active_checks_per_s"] == pytest.approx(rate)


# -- 4. the 2016 external example (KS #5663) --------------------------------------------------


def test_external_2016_without_check_never_detects() -> None:
    # Crash before any client connects, so every connection row is after the fault.
    res = hasim.simulate(external_lb({"kind": "haproxy"},
                                     [{"at": "0s", "target": "master1/apiserver",
                                       "kind": "crash"}], 600.0), seed=3)
    assert res.detections.empty
    assert checks(res, "active").empty
    assert res.state_changes[res.state_changes["component"] == "external-lb"].empty
    conns = checks(res, "connection").set_index("target")["count"]
    # roundrobin keeps master1 in rotation: the selections per server differ by at most
    # one, and without redispatch each selection of the dead master1 is 1 + retries
    # connection attempts to it (all refused).
    retries = 3
    sel_2, sel_3 = conns["master2/apiserver"], conns["master3/apiserver"]
    assert abs(sel_2 - sel_3) <= 1
    assert conns["master1/apiserver"] % (1 + retries) == 0
    sel_1 = conns["master1/apiserver"] // (1 + retries)
    assert sel_1 >= 1 and abs(sel_1 - sel_2) <= 1
    # ... and each of those client connections failed.
    rq = api_requests(res)
    dials_failed = rq[(rq["outcome"] != "ok") & (rq["kind"] != "watch")]
    assert len(dials_failed) == sel_1


def test_external_2016_without_check_keeps_sending_after_midrun_crash() -> None:
    at = 60.0
    res = hasim.simulate(external_lb({"kind": "haproxy"},
                                     [{"at": f"{at}s", "target": "master1/apiserver",
                                       "kind": "crash"}], 300.0), seed=3)
    assert res.detections.empty and checks(res, "active").empty
    rq = api_requests(res)
    after = rq[(rq["start"] > at) & (rq["kind"] != "watch")]
    # The clients whose sessions master1's kernel reset redial; roundrobin sends every
    # third new connection to the dead master, where it fails after 3 retries.
    failed = after[after["outcome"] != "ok"]
    assert len(failed) >= 1
    assert np.allclose(failed["dur"], 3 * 1.0 + 4 * RTT, atol=1e-9)


def test_external_2020_fix_detects() -> None:
    at = 40.0
    lb = {"kind": "haproxy", "check": True, "inter": "10s"}
    res = hasim.simulate(external_lb(lb, [{"at": f"{at}s", "target": "master1/apiserver",
                                           "kind": "crash"}], 200.0), seed=3)
    det = res.detections
    assert list(det["backend"]) == ["master1"]
    # fall 3, fastinter = inter = 10 s, refused d = RTT:
    # T = U(0, 10) + 3*RTT + 2*10 -> 20-30 s (+ one healthy ssl-hello check in flight).
    lo = 3 * RTT + 2 * 10.0
    detect = float(det["detect_s"].iloc[0])
    assert lo - D_OK_SSLHELLO - 1e-9 <= detect <= 10.0 + lo + D_OK_SSLHELLO + 1e-9
    assert not checks(res, "active").empty
    # Once master1 is DOWN, roundrobin skips it: no client connection fails any more.
    rq = api_requests(res)
    detected_at = float(det["detected_at"].iloc[0])
    assert (rq[rq["start"] > detected_at]["outcome"] == "ok").all()


# -- 5. retries and redispatch ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "timeout_connect", "turnaround"),
    [(3, None, 1.0), (5, None, 1.0), (3, "300ms", 0.3)],
)
def test_retries_without_redispatch(retries: int, timeout_connect: str | None,
                                    turnaround: float) -> None:
    lb = {"kind": "haproxy", "retries": retries, "timeout_connect": timeout_connect}
    res = hasim.simulate(external_lb(lb, [{"at": "0s", "target": "master1/apiserver",
                                           "kind": "crash"}], 120.0), seed=4)
    rq = api_requests(res)
    failed = rq[(rq["outcome"] != "ok") & (rq["kind"] != "watch")]
    assert len(failed) >= 1
    # 1 + retries refused attempts on the same server (one RTT each), separated by the
    # turn-around min(1 s, timeout connect) (back_handle_st_cer), then the client is closed.
    expected = retries * turnaround + (retries + 1) * RTT
    assert np.allclose(failed["dur"], expected, atol=1e-9)
    conns = checks(res, "connection").set_index("target")["count"]
    assert conns["master1/apiserver"] == (retries + 1) * len(failed)


def test_redispatch_roundrobin_goes_elsewhere_at_once() -> None:
    lb = {"kind": "haproxy", "redispatch": True}
    res = hasim.simulate(external_lb(lb, [{"at": "0s", "target": "master1/apiserver",
                                           "kind": "crash"}], 120.0), seed=4)
    rq = api_requests(res)
    # stream_choose_redispatch: roundrobin with more than one server up redispatches on
    # the first retry, and back_handle_st_cer skips the turn-around: no client fails.
    assert (rq["outcome"] == "ok").all()
    conns = checks(res, "connection").set_index("target")["count"]
    sel_1 = conns["master1/apiserver"]  # one refused attempt per selection, no retry on it
    assert sel_1 >= 1
    # A new connection through the LB: LB->server connect (1 RTT), then the request over
    # two hops (2 RTTs) and its service time. One routed to master1 first costs exactly one
    # more RTT (the refusal), not a 1 s turn-around.
    dials = rq[rq["kind"] != "watch"]
    normal_dial = 3 * RTT + SERVICE
    redispatched = dials[np.isclose(dials["dur"], normal_dial + RTT, atol=1e-9)]
    assert len(redispatched) == sel_1
    assert dials["dur"].max() == pytest.approx(normal_dial + RTT, abs=1e-9)
    assert (redispatched["backend"] != "master1").all()


def test_leastconn_key_puts_an_empty_server_first_even_in_slowstart() -> None:
    """lb_fwlc.c `fwlc_queue_srv`: key = inflight ? (inflight + 1) * SRV_EWGHT_MAX /
    eweight : 0. A master just back UP (slowstart 60s, eweight near its minimum) with no
    connection is chosen before busy full-weight ones; once it holds one, its small
    eweight keeps it behind a full-weight server with two."""
    lb = _instance(balance="leastconn", slowstart="60s")
    m1, m2, m3 = lb.servers
    m1.up_since = lb.env.now  # came UP just now: eweight 1/256 of full
    m2.conns, m3.conns = 2, 3
    assert lb.select() is m1
    m1.conns = 1
    # m1: (1 + 1) / (1/256) = 512; m2: (2 + 1) / 1 = 3
    assert lb.select() is m2
