"""What clients see of each fault kind (docs/model.md, connections and faults), and the client
timers (docs/model.md, clients).

Expected values come from docs/model.md (and docs/interfaces.md for fault targets), with the formula
in a comment; none is copied from a hasim run.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import hasim

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

HB_TIMEOUT = 10.0  # kubelet heartbeat request timeout (docs/model.md, clients)
RENEW_MAX = 10.0 * (1 + 0.04)  # lease renew interval with its 0.04 jitter
STATUS = 10.0  # node status every 10 s
PROXY_TIMEOUT = 600.0  # kubespray nginx proxy_timeout 10m (docs/model.md, nginx)
PROXY_CONNECT = 1.0  # kubespray nginx proxy_connect_timeout
# client-go reflector re-list backoff: 0.8 s initial, jitter 1.0 -> first wait in [0.8, 1.6)
RELIST_MAX = 0.8 * 2
# A few LAN round trips (0.5 ms) and apiserver service times (2 ms).
SMALL = 0.1
FAULT_AT = 60.0
NODES = [f"node{i}" for i in range(1, 6)]  # the workers of scenarios/default-mode.yaml
CLIENTS = ("kubelet", "kube-proxy")


@cache
def _run(base: str, overrides: str, seed: int):
    sc = hasim.load_scenario(SCENARIOS / base).with_overrides(json.loads(overrides))
    return hasim.simulate(sc, seed=seed)


def run(base: str, fault: dict, seed: int = 0, **overrides):
    ov = {"duration": "3m", "controller_manager.initial_leader": "master3",
          "faults": [{"at": f"{FAULT_AT}s", **fault}], **overrides}
    return _run(base, json.dumps(ov, sort_keys=True), seed)


def reqs(res, hosts, comps=CLIENTS, after=FAULT_AT, before=math.inf):
    """Requests of those clients that END in [after, before)."""
    r = res.requests
    names = [f"{h}/{c}" for h in hosts for c in comps]
    return r[r["client"].isin(names) & (r["end"] >= after) & (r["end"] < before)]


def fault_rows(res):
    st = res.state_changes
    return st[st["component"] == "fault"]


# --- crash / poweroff / partition / slow / lb-crash -------------------------------------------

def test_crash_peers_are_refused_or_reset_at_once():
    """crash: the host's kernel answers. Established connections get FIN/RST at once (the
    kube-proxy watches end AT the fault), new connects are refused after one round trip:
    no request ever waits for a timer."""
    res = run("default-mode.yaml", {"target": "kube-master[0]", "kind": "crash"})
    after = reqs(res, NODES)
    assert set(after["outcome"]) <= {"refused", "reset"}
    assert ((after["end"] - after["start"]) <= SMALL).all()
    watches = after[after["kind"] == "watch"]
    cut = watches[watches["outcome"] == "reset"]
    assert sorted(cut["host"]) == NODES
    assert (cut["end"] == FAULT_AT).all()
    # client-go's reflector opens a watch that ended again at once (no backoff, no
    # re-list): each node's kube-proxy dials at the fault and is refused.
    again = watches[watches["outcome"] == "refused"].groupby("host")["start"].min()
    assert sorted(again.index) == NODES and (again == FAULT_AT).all()


@pytest.mark.parametrize("profile", ["legacy", "modern"])
def test_poweroff_peers_time_out(profile):
    """poweroff: no answer at all. Each kubelet's first failure is a request that runs into
    its own 10 s timeout; nothing is ever refused."""
    res = run("default-mode.yaml", {"target": "kube-master[0]", "kind": "poweroff"},
              **{"clients.profile": profile})
    after = reqs(res, NODES)
    assert "refused" not in set(after["outcome"])
    for h in NODES:
        k = reqs(res, [h], ["kubelet"])
        first = k[k["outcome"] != "ok"].sort_values("start").iloc[0]
        assert first["outcome"] == "timeout"
        assert first["end"] - first["start"] == pytest.approx(HB_TIMEOUT, abs=SMALL)
        assert first["start"] - FAULT_AT <= RENEW_MAX + SMALL
    if profile == "legacy":  # no HTTP/2 ping either: timeouts only
        assert set(after["outcome"]) == {"timeout"}


def test_partition_only_between_the_named_sides():
    """partition master1 <-> node1 for 60 s: node1's requests time out; every other host
    (including master1's own kubelet) keeps working; node1 recovers after the heal."""
    res = run("default-mode.yaml", {"target": "master1", "kind": "partition",
                                    "peers": "node1", "duration": "60s"})
    heal = FAULT_AT + 60
    during = reqs(res, ["node1"], ["kubelet"], FAULT_AT + HB_TIMEOUT, heal)
    assert len(during) and set(during["outcome"]) <= {"timeout", "reset"}
    assert "timeout" in set(during["outcome"])
    others = reqs(res, NODES[1:] + ["master1", "master2", "master3"], ["kubelet"])
    assert set(others["outcome"]) == {"ok"}
    later = reqs(res, ["node1"], ["kubelet"], heal + 2 * HB_TIMEOUT + RENEW_MAX)
    assert len(later) and set(later["outcome"]) == {"ok"}
    rows = fault_rows(res)
    assert rows["host"].tolist() == ["master1", "master1"]
    assert rows["to"].tolist() == ["partition", "healed"]


@pytest.mark.parametrize("delay", [15.0, 5.0])
def test_slow_apiserver_times_out_only_beyond_the_client_timeout(delay):
    """slow (gray): the connection works, answers come ``delay`` late. Beyond the kubelet's
    10 s request timeout every heartbeat times out after exactly 10 s; below it they
    succeed, each taking at least ``delay``. Target ``HOST/COMPONENT``."""
    res = run("default-mode.yaml", {"target": "master1/apiserver", "kind": "slow",
                                    "delay": f"{delay}s", "duration": "60s"})
    heal = FAULT_AT + 60
    # requests that started during the fault and ended before the heal
    k = reqs(res, NODES, ["kubelet"], FAULT_AT, heal)
    k = k[k["start"] >= FAULT_AT]
    assert len(k)
    if delay > HB_TIMEOUT:
        assert set(k["outcome"]) == {"timeout"}
        assert (k["end"] - k["start"]).round(6).eq(HB_TIMEOUT).all()
    else:
        assert set(k["outcome"]) == {"ok"}
        assert ((k["end"] - k["start"]) >= delay).all()
    after = reqs(res, NODES, ["kubelet"], heal + HB_TIMEOUT)
    after = after[after["start"] >= heal]
    assert set(after["outcome"]) == {"ok"}


def test_lb_crash_refuses_that_nodes_clients_until_restart():
    """lb-crash on node1: node1's clients are refused until nginx restarts (30 s), every
    session through it drops at once, no other node notices; afterwards node1 works."""
    res = run("local-lb.yaml", {"target": "node1", "kind": "lb-crash", "duration": "30s"})
    back = FAULT_AT + 30
    during = reqs(res, ["node1"], after=FAULT_AT, before=back)
    assert len(during)
    # The open watch ends at the fault (reset); everything after it, kube-proxy's
    # immediate re-watch included, is refused.
    cut = during[during["outcome"] == "reset"]
    assert cut["kind"].tolist() == ["watch"] and cut["end"].tolist() == [FAULT_AT]
    assert set(during.drop(cut.index)["outcome"]) == {"refused"}
    assert (during["kind"] == "watch").sum() >= 2
    assert set(reqs(res, NODES[1:])["outcome"]) == {"ok"}
    later = reqs(res, ["node1"], ["kubelet"], back + STATUS + SMALL)
    assert len(later) and set(later["outcome"]) == {"ok"}


def test_permanent_vs_timed_fault():
    """Without ``duration`` a fault is for good (default mode: the nodes never recover,
    failover latency inf); with one, the target heals at at + duration, and no client
    recovers before that."""
    perm = run("default-mode.yaml", {"target": "kube-master[0]", "kind": "crash"})
    timed = run("default-mode.yaml", {"target": "kube-master[0]", "kind": "crash",
                                      "duration": "30s"})
    node_kubelets = [f"{h}/kubelet" for h in NODES]
    fo = perm.failovers.set_index("client").loc[node_kubelets]
    assert np.isinf(fo["latency_s"]).all()
    assert fault_rows(perm)["to"].tolist() == ["crash"]
    fo = timed.failovers.set_index("client").loc[node_kubelets]
    assert ((fo["recovered_at"] >= FAULT_AT + 30) & (fo["recovered_at"] <= FAULT_AT + 30
                                                     + RENEW_MAX + SMALL)).all()
    rows = fault_rows(timed)
    assert rows["to"].tolist() == ["crash", "healed"]
    assert rows["time"].tolist() == [FAULT_AT, FAULT_AT + 30]


def test_target_forms_host_component_vs_member_vs_group():
    """``master1/apiserver`` kills only the apiserver: master1's kubelet lives on, keeps
    asking its local apiserver (refused) and is a victim in ``failovers``.
    ``kube-master[0]`` kills every process of master1: its kubelet falls silent and is
    the fault itself, not a victim. A group (``kube-node``) hits every member."""
    only_api = run("default-mode.yaml", {"target": "master1/apiserver", "kind": "crash"})
    whole = run("default-mode.yaml", {"target": "kube-master[0]", "kind": "crash"})
    mine = reqs(only_api, ["master1"], ["kubelet"], FAULT_AT + SMALL)
    assert len(mine) and set(mine["outcome"]) == {"refused"}
    assert "master1/kubelet" in set(only_api.failovers["client"])
    assert reqs(whole, ["master1"], ["kubelet"], FAULT_AT + SMALL).empty
    assert "master1/kubelet" not in set(whole.failovers["client"])

    group = run("local-lb.yaml", {"target": "kube-node", "kind": "lb-crash"})
    assert fault_rows(group)["host"].tolist() == [",".join(sorted(NODES))]
    k = reqs(group, NODES, after=FAULT_AT + SMALL)
    assert len(k) and set(k["outcome"]) == {"refused"}
    assert set(k["host"]) == set(NODES)


# --- client timers -----------------------------------------------------------------------------

def test_dial_to_blackholed_master_times_out_with_the_request():
    """Default mode, node1 cut off from m[0] for good (modern profile): the HTTP/2 ping
    closes the old connection, then every redial gets no SYN-ACK and is given up at the
    request's 10 s timeout (shorter than client-go's 30 s dial timeout and the kernel's
    127 s). This used to crash the run (an uncaught SimPy Interrupt)."""
    res = run("default-mode.yaml", {"target": "master1", "kind": "partition",
                                    "peers": "node1"})
    k = reqs(res, ["node1"], ["kubelet"])
    dials = k[k["backend"] == ""]
    assert len(dials)
    assert set(dials["outcome"]) == {"timeout"}
    assert (dials["end"] - dials["start"]).round(6).eq(HB_TIMEOUT).all()


def test_legacy_watch_behind_nginx_hangs_until_proxy_timeout():
    """legacy kube-proxy, nginx local LB, its watch on a powered-off master: the server's
    end of the watch never arrives and no client timer runs, so the watch hangs until
    nginx's proxy_timeout (10 min without a read or write on either side, docs/model.md, nginx)
    after the list that preceded it; then it re-lists at once (backoff < 1.6 s, dial
    <= 1 s)."""
    res = run("local-lb.yaml", {"target": "kube-master[1]", "kind": "poweroff"},
              **{"duration": "13m", "clients.profile": "legacy",
                 "cluster.generate.nodes": 10})
    r = res.requests
    hung = 0
    for client in sorted(set(r["client"])):
        if not client.endswith("kube-proxy") or client.startswith("master"):
            continue
        mine = r[r["client"] == client].sort_values("end")
        ok_before = mine[(mine["outcome"] == "ok") & (mine["end"] < FAULT_AT)]
        last = ok_before.iloc[-1]
        if last["backend"] != "master2":
            continue
        hung += 1
        watch = mine[(mine["kind"] == "watch") & (mine["end"] >= FAULT_AT)].iloc[0]
        assert watch["end"] == pytest.approx(last["end"] + PROXY_TIMEOUT, abs=SMALL)
        fo = res.failovers.set_index("client").loc[client]
        assert fo["recovered_at"] - watch["end"] <= RELIST_MAX + PROXY_CONNECT + SMALL
    # least_conn's tie-break on the one worker that accepts (EPOLLEXCLUSIVE): each
    # node's first connection goes to master1, its second (kube-proxy's) to master2.
    assert hung
