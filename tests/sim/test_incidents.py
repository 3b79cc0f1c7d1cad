"""The incidents of docs/model.md (and the control-loop arithmetic of clients) reproduced by
``hasim.simulate``.

Every expected value is derived here from docs/model.md's numbers, with the formula next to
it; nothing is copied from a hasim run. Runs with the same seed in two configurations
share their random numbers (client phases, fault times), so they can be compared node by
node.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

import hasim

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

# --- docs/model.md, clients (kubelet, controller-manager, client-go) ------------------------------
GRACE = 40.0  # node-monitor-grace-period, kubespray
GRACE_UPSTREAM = 50.0  # upstream since v1.32 (k8s #126287)
MONITOR = 5.0  # node-monitor-period
RENEW = 10.0  # kubelet lease renew interval
# The lease controller runs wait.JitterUntil(sync, renewInterval, 0.04, ...)
# (component-helpers/apimachinery/lease/controller.go): renewals are 10 to 10.4 s apart.
RENEW_MAX = RENEW * (1 + 0.04)
HB_TIMEOUT = 10.0  # kubelet heartbeat request timeout = min(status frequency, lease)
LEASE, RETRY = 15.0, 2.0  # controller-manager leader election: lease, retry period
# client-go leaderelection: acquire() retries every RetryPeriod x (1 + JitterFactor U),
# JitterFactor = 1.2, so a candidate looks again at most 4.4 s later.
ACQUIRE_GAP_MAX = RETRY * (1 + 1.2)
READ_IDLE, PING = 30.0, 15.0  # client-go HTTP/2 health check (k8s #95981)
TCP_RETRIES2 = 924.0  # a silently dead connection errors after ~924 s (k8s #41185)
PROXY_CONNECT = 1.0  # kubespray nginx proxy_connect_timeout (docs/model.md, nginx)
# A few LAN round trips (0.5 ms each) and apiserver service times (2 ms): bookkeeping
# slack, far below every timer above.
SMALL = 0.1
FAULT_AT = 60.0


def _scenario(base: str, overrides: str):
    return hasim.load_scenario(SCENARIOS / base).with_overrides(json.loads(overrides))


@cache
def _run(base: str, overrides: str, seed: int):
    return hasim.simulate(_scenario(base, overrides), seed=seed)


def run(base: str, seed: int = 0, **overrides):
    """``hasim.simulate`` of a scenario file with dotted overrides (cached per module)."""
    return _run(base, json.dumps(overrides, sort_keys=True), seed)


def workers(base: str, **overrides) -> list[str]:
    """Hosts with a kubelet that are not masters."""
    sc = _scenario(base, json.dumps(overrides, sort_keys=True))
    masters = set(sc.cluster.members("kube-master"))
    return [h.name for h in sc.cluster.hosts if h.name not in masters]


def not_ready(res, hosts) -> pd.DataFrame:
    ns = res.node_status
    return ns[ns["host"].isin(hosts) & (ns["not_ready_at"] >= FAULT_AT)]


def kubelet_before_fault(res, host: str) -> pd.Series:
    """The kubelet's last successful request before the fault (its last read)."""
    req = res.requests
    mine = req[(req["client"] == f"{host}/kubelet") & (req["outcome"] == "ok")
               & (req["end"] <= FAULT_AT)]
    return mine.sort_values("end").iloc[-1]


def first_failure(res, host: str) -> pd.Series:
    """The kubelet's first failed request after the fault."""
    req = res.requests
    mine = req[(req["client"] == f"{host}/kubelet") & (req["outcome"] != "ok")
               & (req["end"] >= FAULT_AT)]
    return mine.sort_values("start").iloc[0]


def kubelet_failover(res, host: str) -> pd.Series:
    fo = res.failovers
    return fo[fo["client"] == f"{host}/kubelet"].iloc[0]


def takeover(res) -> float:
    st = res.state_changes
    t = st[(st["component"] == "controller-manager") & (st["to"] == "leader")
           & (st["time"] > FAULT_AT)]
    return float(t["time"].min())


# --- 1. default mode (no LB): every node points at m[0] --------------------------------------

DEFAULT = "default-mode.yaml"
DEFAULT_OV = {"duration": "3m"}
SEEDS = (0, 1, 2, 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_default_mode_m0_crash_notready_with_leader_elsewhere(seed):
    """m[0] crashes; the controller-manager leader (master3) is unaffected.

    Last renewal r in [f - RENEW_MAX, f); the leader sees it at its next pass,
    p in [r, r + MONITOR); NotReady at the first pass at or after p + grace. So
    NotReady - f in [grace - RENEW_MAX, grace + MONITOR] = [29.6, 45] (docs/model.md: 30-45 s,
    the 0.4 s is the lease controller's jitter).
    """
    res = run(DEFAULT, seed, **DEFAULT_OV, **{"controller_manager.initial_leader": "master3"})
    hosts = workers(DEFAULT)
    nr = not_ready(res, hosts)
    assert sorted(nr["host"]) == sorted(hosts)  # every non-master node, once
    assert nr["ready_at"].isna().all()  # and it stays NotReady (m[0] never returns)
    delay = nr["not_ready_at"] - FAULT_AT
    assert (delay >= GRACE - RENEW_MAX - SMALL).all(), delay.tolist()
    assert (delay <= GRACE + MONITOR + SMALL).all(), delay.tolist()
    # The masters' own kubelets use their local apiserver: master2 and master3 stay Ready.
    assert not_ready(res, ["master2", "master3"]).empty


@pytest.mark.parametrize("seed", SEEDS)
def test_default_mode_m0_crash_leader_moves_and_delays_notready(seed):
    """m[0] crashes and takes the controller-manager leader with it (master1 leads).

    The leader renews every RETRY, so its last renewal r is in (f - RETRY, f]. A candidate
    notices r at its next try, obs in (r, r + ACQUIRE_GAP_MAX], and takes over at its first
    try with now >= obs + LEASE: T in (r + LEASE, r + LEASE + 2 ACQUIRE_GAP_MAX], so
    T - f in (LEASE - RETRY, LEASE + 2 ACQUIRE_GAP_MAX] = (13, 23.8] s. The new leader
    knows no heartbeat and starts every grace period at T ("Assuming now"): NotReady at
    its first pass at or after T + grace, i.e. in [T + grace, T + grace + MONITOR].
    """
    moved = run(DEFAULT, seed, **DEFAULT_OV)
    elsewhere = run(DEFAULT, seed, **DEFAULT_OV,
                    **{"controller_manager.initial_leader": "master3"})
    t = takeover(moved)
    assert LEASE - RETRY - SMALL < t - FAULT_AT <= LEASE + 2 * ACQUIRE_GAP_MAX + SMALL
    hosts = workers(DEFAULT)
    nr = not_ready(moved, hosts).set_index("host")
    assert sorted(nr.index) == sorted(hosts)
    assert nr["ready_at"].isna().all()
    assert (nr["not_ready_at"] >= t + GRACE - SMALL).all()
    assert (nr["not_ready_at"] <= t + GRACE + MONITOR + SMALL).all()
    # Later than with the leader elsewhere, node by node (same seed: same kubelet phases).
    base = not_ready(elsewhere, hosts).set_index("host")["not_ready_at"]
    assert (nr["not_ready_at"] > base.loc[nr.index]).all()
    # ... indeed beyond the whole no-move window: f + (LEASE - RETRY) + grace > f + 45.
    assert (nr["not_ready_at"] - FAULT_AT > GRACE + MONITOR).all()


# --- 2. k8s #121793: the HTTP/2 health check (45 s) outlasts the 40 s grace ----------------

LOCAL = "local-lb.yaml"
N_NODES = 20


def poweroff_m0(profile: str, grace: float = GRACE, duration: str = "4m", **extra):
    return {
        "clients.profile": profile,
        "controller_manager.initial_leader": "master3",
        "controller_manager.node_monitor_grace_period": grace,
        "faults": [{"at": f"{FAULT_AT}s", "target": "kube-master[0]", "kind": "poweroff"}],
        "duration": duration,
        "cluster.generate.nodes": N_NODES,
        **extra,
    }


def on_master1(res, hosts) -> list[str]:
    """The nodes whose kubelet connection master1 held when it vanished."""
    return [h for h in hosts if kubelet_before_fault(res, h)["backend"] == "master1"]


K121793_SEEDS = (0, 1, 2)


def test_k8s121793_blackholed_master_nodes_flap_at_40s_grace_not_at_50s():
    """A powered-off master (modern profile, nginx local LB, healthy masters left).

    A victim's last read L is at or after its last renewal r; nothing is read after the
    fault, so the HTTP/2 ping closes the connection at L + READ_IDLE + PING = L + 45 and
    the next renewal r' >= L + 45 >= r + 45. The leader saw r at p in [r, r + MONITOR), and
    its pass at p + 40 finds no renewal since r' > r + 45 > p + 40: at 40 s grace EVERY
    victim goes NotReady, and comes back (a flap). At 50 s it needs r' > p + 50, i.e. a
    last read more than ~4 s after the last lease renewal AND an early probe: with both
    uniform over their periods that is well under a quarter of the victims (~17 %).
    """
    flapped = {GRACE: 0, GRACE_UPSTREAM: 0}
    victims_total = 0
    for seed in K121793_SEEDS:
        hosts = workers(LOCAL, **{"cluster.generate.nodes": N_NODES})
        res40 = run(LOCAL, seed, **poweroff_m0("modern", GRACE))
        victims = on_master1(res40, hosts)
        assert victims  # the tie-break puts kubelets on master1 (KS #2150, tested below)
        victims_total += len(victims)
        for grace in (GRACE, GRACE_UPSTREAM):
            res = run(LOCAL, seed, **poweroff_m0("modern", grace))
            nr = not_ready(res, hosts)
            assert set(nr["host"]) <= set(victims)  # nodes on healthy masters never flap
            assert nr["ready_at"].notna().all()  # a flap: every one comes back
            flapped[grace] += nr["host"].nunique()
            if grace == GRACE:
                assert sorted(nr["host"].unique()) == sorted(victims)
    assert flapped[GRACE] == victims_total
    assert flapped[GRACE_UPSTREAM] <= victims_total / 4, flapped


def test_k8s121793_kubelet_failover_is_read_idle_plus_ping_after_last_read():
    """Recovery of a victim's kubelet: the ping closes the connection L + 30 + 15 after its
    last read L; it redials at once through nginx, which may first try the dead master
    (proxy_connect_timeout 1 s) before the next one. So recovered_at - L in
    [45, 45 + PROXY_CONNECT + SMALL], and latency = recovered_at - f in
    [45 - RENEW_MAX, 45 + PROXY_CONNECT + SMALL] since f - L <= RENEW_MAX."""
    hosts = workers(LOCAL, **{"cluster.generate.nodes": N_NODES})
    for seed in K121793_SEEDS:
        res = run(LOCAL, seed, **poweroff_m0("modern", GRACE))
        for h in on_master1(res, hosts):
            last_read = kubelet_before_fault(res, h)["end"]
            fo = kubelet_failover(res, h)
            since_read = fo["recovered_at"] - last_read
            hc = READ_IDLE + PING  # the HTTP/2 health check's 45 s
            assert hc - SMALL <= since_read <= hc + PROXY_CONNECT + SMALL
            assert READ_IDLE + PING - RENEW_MAX - SMALL <= fo["latency_s"]
            assert fo["latency_s"] <= READ_IDLE + PING + PROXY_CONNECT + SMALL


# --- 3. k8s #48638 / #41185: 15-minute gaps without the HTTP/2 check ----------------------

def test_k8s48638_k8s41185_legacy_kubelet_cut_off_for_tcp_retries2():
    """legacy profile: nothing but the kernel ends the dead connection. The first request
    sent after the fault, at s1 in [f, f + RENEW_MAX], is never acknowledged; the socket
    errors at s1 + 924 and the kubelet redials (<= 1 s through nginx). So
    recovered - s1 in [924, 924 + PROXY_CONNECT + SMALL] and the failover latency in
    [924, 924 + RENEW_MAX + PROXY_CONNECT + SMALL].

    NotReady from f + [grace - RENEW_MAX, grace + MONITOR] (as in default mode) until the
    lease is renewed and seen: after recovery R, the lease loop renews within one renew
    interval plus a pass. Duration in [R - f - 45, R - f - (grace - RENEW_MAX) + RENEW_MAX
    + MONITOR]: about 15 min.
    """
    hosts = workers(LOCAL, **{"cluster.generate.nodes": N_NODES})
    res = run(LOCAL, 0, **poweroff_m0("legacy", GRACE, duration="20m"))
    victims = on_master1(res, hosts)
    assert len(victims) >= 0.9 * len(hosts)
    nr = not_ready(res, hosts).set_index("host")
    assert sorted(nr.index) == sorted(victims)  # each victim, once, for the whole gap
    for h in victims:
        fo = kubelet_failover(res, h)
        s1 = first_failure(res, h)["start"]
        since_s1 = fo["recovered_at"] - s1
        assert TCP_RETRIES2 - SMALL <= since_s1 <= TCP_RETRIES2 + PROXY_CONNECT + SMALL
        assert TCP_RETRIES2 <= fo["latency_s"] <= TCP_RETRIES2 + RENEW_MAX + PROXY_CONNECT + SMALL
        r = fo["recovered_at"] - FAULT_AT
        dur = nr.loc[h, "duration_s"]
        assert r - (GRACE + MONITOR) - SMALL <= dur
        assert dur <= r - (GRACE - RENEW_MAX) + RENEW_MAX + MONITOR + SMALL
        assert 14 * 60 < dur < 16 * 60  # "15-minute node-status gaps"


# --- 4. KS #2150: nginx's tie-break puts every node's first connection on master1 ----------

def test_ks2150_kubelet_first_backend_is_master1_on_every_node():
    """least_conn ties are broken by smooth weighted round robin from the FIRST server of
    the upstream; each worker starts fresh, so whichever worker accepts it, the node's
    first connection (the kubelet registering its node) goes to master1 (docs/model.md, nginx)."""
    for seed in (0, 1):
        res = run(LOCAL, seed, **poweroff_m0("legacy", GRACE))
        hosts = workers(LOCAL, **{"cluster.generate.nodes": N_NODES})
        req = res.requests
        for h in hosts:
            mine = req[req["client"] == f"{h}/kubelet"].sort_values("start")
            assert mine.iloc[0]["backend"] == "master1", h


@pytest.mark.parametrize("isolation", ["partition", "poweroff"])
def test_ks2150_isolated_first_master_takes_all_workers_notready(isolation):
    """legacy profile (k8s 1.7, no HTTP/2 check): master1 isolated (cut off from every
    other host, or powered off). Every kubelet connection sits on it (tie-break above)
    and hangs for tcp_retries2 (924 s >> 40 s grace): all workers NotReady.

    The partition run keeps the controller-manager leader on master3 (on master1 it is
    cut off together with its etcd member and loses the lease anyway); the poweroff run
    leaves it on master1, so it also moves (NotReady then comes later, still << 924 s).
    """
    if isolation == "partition":
        fault = {"at": f"{FAULT_AT}s", "target": "master1", "kind": "partition",
                 "peers": "all"}
        ov = poweroff_m0("legacy", GRACE, faults=[fault])
    else:
        ov = poweroff_m0("legacy", GRACE)
        ov.pop("controller_manager.initial_leader")
    res = run(LOCAL, 0, **ov)
    hosts = workers(LOCAL, **{"cluster.generate.nodes": N_NODES})
    nr = not_ready(res, hosts)
    assert nr["host"].nunique() >= 0.9 * len(hosts)  # "ALL workers went NotReady"
    # Still NotReady well after the fault: TCP_RETRIES2 has not run out yet by f + 5 min.
    t = FAULT_AT + 300.0
    down = nr[(nr["not_ready_at"] <= t) & (nr["ready_at"].isna() | (nr["ready_at"] > t))]
    assert down["host"].nunique() >= 0.9 * len(hosts)


# --- 5. k8s #63492 / #108107: redial after 2 failed heartbeats; DISABLE_HTTP2 ---------------

@pytest.mark.parametrize("profile,http1", [("closeconns", False), ("modern", True)])
def test_k8s63492_k8s108107_kubelet_redials_after_failed_heartbeats(profile, http1):
    """closeconns (1.11-1.19): from the 2nd consecutive failed heartbeat the kubelet drops
    its connections and redials (k8s #63492). The first failure starts at s1; the try
    after it fails at s1 + 2 HB_TIMEOUT; the redial takes <= PROXY_CONNECT. DISABLE_HTTP2
    (k8s #108107): a timed-out HTTP/1.1 request closes its own connection, so the redial
    comes after ONE timeout, never later than the closeconns bound. Either way the next
    lease renewal is at most RENEW_MAX + 2 HB_TIMEOUT + 1 s = 31.4 s after the last one:
    inside the 40 s grace, no NotReady.
    """
    extra = {"clients.disable_http2": True} if http1 else {}
    res = run(LOCAL, 0, **poweroff_m0(profile, GRACE, **extra))
    hosts = workers(LOCAL, **{"cluster.generate.nodes": N_NODES})
    victims = on_master1(res, hosts)
    assert victims
    assert not_ready(res, hosts).empty
    lower = HB_TIMEOUT if http1 else 2 * HB_TIMEOUT
    for h in victims:
        fo = kubelet_failover(res, h)
        s1 = first_failure(res, h)["start"]
        assert lower - SMALL <= fo["recovered_at"] - s1 <= lower + PROXY_CONNECT + SMALL
        assert fo["latency_s"] <= RENEW_MAX + 2 * HB_TIMEOUT + PROXY_CONNECT + SMALL
        assert math.isfinite(fo["latency_s"])
