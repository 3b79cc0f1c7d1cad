"""etcd raft elections, writes without quorum, the v2 proxy and flannel (MODEL.md §1.3,
§2.4, §3, §7).

Expected values are MODEL.md's formulas, written next to each check; none comes from a
previous hasim run. Samples come from many seeds of a tiny cluster (one master, etcd on
separate hosts ``etcd1..``), each run losing the etcd leader once.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import hasim
from hasim.scenario import scenario_from_dict

RTT = 0.0005  # NetworkSpec default: one LAN round trip
FAULT_AT = 1.0
KS_LEVEL = 0.01  # Kolmogorov-Smirnov test at the 1% level

#: (heartbeat H, election timeout E): etcd defaults; kubespray 2016 (election 10 s; the
#: heartbeat left at etcd's default); current kubespray (250 ms / 5 s). MODEL.md §3.
TIMINGS = {
    "etcd-defaults": (0.1, 1.0),
    "kubespray-2016": (0.1, 10.0),
    "kubespray-current": (0.25, 5.0),
}


def _min_uniform_cdf(e: float, k: int, shift: float):
    """CDF of shift + min of k iid U[E, 2E): 1 - (1 - (x - shift - E)/E)^k on [E, 2E)."""

    def cdf(x: np.ndarray) -> np.ndarray:
        u = np.clip((np.asarray(x) - shift - e) / e, 0.0, 1.0)
        return 1.0 - (1.0 - u) ** k

    return cdf


@cache
def _election(hb: float, e: float, members: int, seed: int, second_at: float | None
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Crash the initial leader (etcd1, the first member) at FAULT_AT for good; optionally
    crash etcd2 too at ``second_at``. Returns (elections, etcd state changes)."""
    faults = [{"kind": "crash", "at": f"{FAULT_AT}s", "target": "etcd[0]/etcd"}]
    if second_at is not None:
        faults.append({"kind": "crash", "at": f"{second_at}s", "target": "etcd[1]/etcd"})
    sc = scenario_from_dict({
        "name": "etcd-leader-loss",
        "cluster": {"generate": {"masters": 1, "etcd": members, "nodes": 0}},
        "etcd": {"heartbeat_interval": f"{hb}s", "election_timeout": f"{e}s"},
        "faults": faults,
        # every survivor times out by last heartbeat + 2E; a round trip later it leads
        "duration": f"{FAULT_AT + 2 * e + 0.5}s",
    })
    res = hasim.simulate(sc, seed=seed)
    st = res.state_changes
    return res.elections, st[st["component"] == "etcd"]


def _samples(hb: float, e: float, members: int, n: int, second_at: float | None = None
             ) -> pd.DataFrame:
    rows = []
    for seed in range(n):
        el, st = _election(hb, e, members, seed, second_at)
        # the initial leader is the first member, and it is the one the fault took
        assert st.iloc[0]["host"] == "etcd1" and st.iloc[0]["to"] == "leader"
        assert len(el) == 1, f"seed {seed}: expected one election, got {len(el)}"
        rows.append(el.iloc[0])
    return pd.DataFrame(rows)


def _check_leader_loss(hb: float, e: float, members: int, n: int,
                       second_at: float | None = None) -> float:
    df = _samples(hb, e, members, n, second_at)
    survivors = members - 1 - (second_at is not None)
    # MODEL.md §3: the leader's last heartbeat was at most one heartbeat interval before
    # it died: last_hb in [t - H, t].
    assert (df["lost_at"] == FAULT_AT).all()
    assert (df["last_heartbeat_at"] <= FAULT_AT + 1e-12).all()
    assert (df["last_heartbeat_at"] >= FAULT_AT - hb - 1e-12).all()
    # Election from the last heartbeat: min over survivors of U[E, 2E), plus a round trip.
    el = df["election_s"].to_numpy()
    assert (el >= e + RTT - 1e-9).all(), el.min()
    assert (el < 2 * e + RTT + 1e-9).all(), el.max()
    # ... and from the fault: in [E - H, 2E) + RTT.
    after_fault = (df["time"] - df["lost_at"]).to_numpy()
    assert (after_fault >= e - hb + RTT - 1e-9).all()
    assert (after_fault < 2 * e + RTT + 1e-9).all()
    # the winner is a survivor, never the dead leader (nor the second casualty)
    dead = {"etcd1"} | ({"etcd2"} if second_at is not None else set())
    assert not set(df["member"]) & dead
    # distribution: min of `survivors` iid U[E, 2E), shifted by the round trip
    p = stats.kstest(el, _min_uniform_cdf(e, survivors, RTT)).pvalue
    assert p > KS_LEVEL, f"KS p = {p:.4g} (n = {len(el)}, k = {survivors})"
    return p


@pytest.mark.parametrize("timing", list(TIMINGS))
def test_election_after_leader_loss_is_min_of_uniforms(timing):
    """3 members, the leader dies: 2 survivors; new leader after min of 2 U[E, 2E) + RTT
    from the last heartbeat (etcd defaults: 1.0-2.0 s, MODEL.md §3)."""
    hb, e = TIMINGS[timing]
    _check_leader_loss(hb, e, members=3, n=150)


def test_election_min_over_four_survivors():
    """5 members, the leader dies: min of 4 U[E, 2E); mean E + E/5 (MODEL.md §7)."""
    hb, e = TIMINGS["etcd-defaults"]
    _check_leader_loss(hb, e, members=5, n=150)
    df = _samples(hb, e, 5, 150)
    # E[min of k U[E, 2E)] = E + E/(k+1); the sample mean within 4 standard errors
    # (sd of min of k uniforms = E sqrt(k/((k+1)^2 (k+2)))).
    k = 4
    mean = e + e / (k + 1) + RTT
    se = e * np.sqrt(k / ((k + 1) ** 2 * (k + 2))) / np.sqrt(len(df))
    assert abs(df["election_s"].mean() - mean) < 4 * se


def test_second_member_dying_before_any_timeout_does_not_delay_the_election():
    """5 members; the leader dies, and another member at t + E/2, before any follower's
    timer can fire (those fire at last_hb + E >= t - H + E). The other followers' timers
    keep running (etcd raft: electionElapsed is reset only by a leader's or candidate's
    message), so the new leader comes after min over the 3 survivors of U[E, 2E) + RTT
    from the last heartbeat, never later than 2E + RTT."""
    hb, e = TIMINGS["etcd-defaults"]
    _check_leader_loss(hb, e, members=5, n=150, second_at=FAULT_AT + e / 2)


@pytest.mark.slow
@pytest.mark.parametrize("timing", list(TIMINGS))
def test_election_distribution_many_samples(timing):
    hb, e = TIMINGS[timing]
    _check_leader_loss(hb, e, members=3, n=1500)


# --- no leader without a majority -----------------------------------------------------------

DOWN_AT, DOWN_FOR = 30.0, 60.0


@cache
def _no_quorum(seed: int = 0):
    """etcd on the 3 masters; the two followers (master2, master3) crash together for 60 s:
    the leader (master1) keeps 1 of 3, below the majority of 2."""
    sc = scenario_from_dict({
        "name": "etcd-no-quorum",
        "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": 2}},
        "faults": [
            {"kind": "crash", "at": f"{DOWN_AT}s", "target": "master2/etcd",
             "duration": f"{DOWN_FOR}s"},
            {"kind": "crash", "at": f"{DOWN_AT}s", "target": "master3/etcd",
             "duration": f"{DOWN_FOR}s"},
        ],
        "duration": "120s",
    })
    return hasim.simulate(sc, seed=seed)


def test_no_leader_without_majority():
    res = _no_quorum()
    e = 1.0  # etcd default election timeout
    st = res.state_changes
    etcd = st[(st["component"] == "etcd")]
    # the leader steps down when it loses its majority (CheckQuorum; MODEL.md §3)
    down = etcd[(etcd["time"] == DOWN_AT) & (etcd["to"] == "follower")]
    assert list(down["host"]) == ["master1"]
    # no member becomes leader while 2 of 3 are down
    won = etcd[etcd["to"] == "leader"]
    assert won[(won["time"] > 0) & (won["time"] < DOWN_AT + DOWN_FOR)].empty
    # after the two return, a leader within 2E + RTT: the survivor campaigns again within
    # U[E, 2E) of its last campaign, the returning members time out U[E, 2E) after boot.
    back = won[won["time"] >= DOWN_AT + DOWN_FOR]
    assert not back.empty
    assert back["time"].iloc[0] - (DOWN_AT + DOWN_FOR) < 2 * e + RTT + 1e-9
    assert len(res.elections) == 1


def test_writes_fail_without_quorum():
    """Kubelets on the workers write their lease through master1's apiserver (default
    mode: m[0]); that apiserver is up but its etcd has no leader: every lease write in
    the outage gets ``error``, and they succeed again once a leader is back."""
    res = _no_quorum()
    req = res.requests
    leases = req[req["kind"].isin(["lease"]) & req["client"].isin(["node1/kubelet",
                                                                   "node2/kubelet"])]
    during = leases[(leases["start"] > DOWN_AT) & (leases["start"] < DOWN_AT + DOWN_FOR)]
    # renew every 10 s (x 1.04 jitter at most) over 60 s: at least 5 tries per kubelet
    assert len(during) >= 10
    assert set(during["outcome"]) == {"error"}
    # leader back within 2E + RTT of the return; the next renewal (<= 10.4 s) succeeds
    after = leases[leases["start"] > DOWN_AT + DOWN_FOR + 2.0 + RTT]
    assert not after.empty and set(after["outcome"]) == {"ok"}


# --- the etcd proxy and flannel --------------------------------------------------------------

PROXY_RESTART = 15.0  # kubespray's etcd-proxy unit: RestartSec=15s (MODEL.md §1.3)


def _proxy_crash(seed: int):
    sc = scenario_from_dict({
        "name": "etcd-proxy-crash",
        "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": 2}},
        # no duration: the process dies, its supervisor restarts it
        "faults": [{"kind": "crash", "at": f"{DOWN_AT}s", "target": "node1/etcd-proxy"}],
        "duration": "75s",
    })
    return hasim.simulate(sc, seed=seed)


def test_etcd_proxy_death_cuts_the_nodes_etcd_clients_until_restart():
    """flannel on node1 reaches etcd only through node1's proxy: refused from the crash
    until systemd restarts the proxy RestartSec = 15 s later, then ok again. flannel polls
    every 10 s from a random phase, so each seed brackets the restart between its last
    refused and first ok request; over 40 seeds those brackets close in on t + 15 s."""
    restart = DOWN_AT + PROXY_RESTART
    last_refused, first_ok = [], []
    for seed in range(40):
        req = _proxy_crash(seed).requests
        fl = req[req["client"] == "node1/flannel"]
        after = fl[fl["start"] >= DOWN_AT]
        cut = after[after["start"] < restart]
        assert not cut.empty  # 15 s > one 10 s poll period
        assert set(cut["outcome"]) == {"refused"}
        healed = after[after["start"] >= restart]
        assert not healed.empty and set(healed["outcome"]) == {"ok"}, (
            "the etcd proxy did not come back after RestartSec")
        last_refused.append(cut["start"].max())
        first_ok.append(healed["start"].min())
        # node2's flannel has its own proxy: untouched
        other = req[(req["client"] == "node2/flannel") & (req["start"] >= DOWN_AT)]
        assert set(other["outcome"]) == {"ok"}
    # P(no seed polls within 2 s of the restart on a side) = 0.8^40 < 1e-3
    assert max(last_refused) > restart - 2.0
    assert min(first_ok) < restart + 2.0


@cache
def _multiaccess(seed: int = 0):
    sc = scenario_from_dict({
        "name": "etcd-multiaccess-first-member",
        "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": 2},
                    "vars": {"etcd_multiaccess": True}},
        "faults": [{"kind": "crash", "at": f"{DOWN_AT}s", "target": "master1/etcd",
                    "duration": f"{DOWN_FOR}s"}],
        "duration": "110s",
    })
    return hasim.simulate(sc, seed=seed)


def test_flannel_single_endpoint_has_no_failover():
    """etcd_multiaccess: flannel's config writer takes ONE --etcd-server, the first member
    (master1): its requests fail for the whole outage of that member (MODEL.md §1.3)."""
    req = _multiaccess().requests
    for node in ("node1", "node2"):
        fl = req[req["client"] == f"{node}/flannel"]
        during = fl[(fl["start"] >= DOWN_AT) & (fl["start"] < DOWN_AT + DOWN_FOR)]
        assert len(during) >= 5  # a poll every 10 s
        assert set(during["outcome"]) == {"refused"}
        after = fl[fl["start"] >= DOWN_AT + DOWN_FOR + 2.0 + RTT]
        assert not after.empty and set(after["outcome"]) == {"ok"}


def test_multiaccess_apiservers_keep_serving_when_first_member_dies():
    """The apiservers are given all members and fail over themselves: once the election
    that follows the leader's (master1's) death is over (<= 2E + RTT), the workers' lease
    writes through master1's apiserver succeed during the member's outage."""
    res = _multiaccess()
    req = res.requests
    el = res.elections
    assert len(el) == 1 and el["lost_at"].iloc[0] == DOWN_AT
    assert el["time"].iloc[0] - DOWN_AT < 2 * 1.0 + RTT + 1e-9
    leases = req[(req["kind"] == "lease") & req["client"].isin(["node1/kubelet",
                                                                "node2/kubelet"])]
    during = leases[(leases["start"] > DOWN_AT + 2.0 + RTT)
                    & (leases["start"] < DOWN_AT + DOWN_FOR)]
    assert len(during) >= 8
    assert set(during["outcome"]) == {"ok"}


def test_etcd_proxy_answer_cache_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy answers a request as the last one while neither the network nor the
    etcd leader has changed (``EtcdProxy._fast``). Every flannel request, through every
    kind of fault the proxy meets (its first endpoint crashing, etcd losing its leader
    and electing, an etcd member partitioned off, a member's host powered off, the
    proxy itself crashing), must come out exactly as it does with the cache emptied
    before every request: same outcome, same start and end, same random draws."""
    from hasim.sim.etcd import EtcdProxy

    sc = scenario_from_dict({
        "name": "etcd-proxy-cache",
        "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": 4}},
        "faults": [
            {"kind": "crash", "at": "20s", "target": "etcd[0]/etcd", "duration": "30s"},
            {"kind": "partition", "at": "70s", "target": "etcd[1]", "peers": "all",
             "duration": "25s"},
            {"kind": "poweroff", "at": "110s", "target": "etcd[2]", "duration": "40s"},
            {"kind": "crash", "at": "160s", "target": "node1/etcd-proxy"},
        ],
        "duration": "240s",
    })

    def flannel(res: Any) -> pd.DataFrame:
        req = res.requests
        return req[req["kind"] == "etcd"].reset_index(drop=True)

    request = EtcdProxy.request

    def uncached(self: EtcdProxy, client_host: str):  # type: ignore[no-untyped-def]
        self._fast = None
        return request(self, client_host)

    for seed in range(3):
        cached = flannel(hasim.simulate(sc, seed=seed))
        with monkeypatch.context() as m:
            m.setattr(EtcdProxy, "request", uncached)
            reference = flannel(hasim.simulate(sc, seed=seed))
        # the faults reach flannel: failures, and more than one kind of them
        assert (reference["outcome"] != "ok").sum() > 0
        assert reference["outcome"].nunique() >= 2
        pd.testing.assert_frame_equal(cached, reference)
