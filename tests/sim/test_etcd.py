"""etcd raft elections, writes without quorum, the v2 proxy and flannel (docs/model.md, etcd access,
the etcd v2 proxy, etcd, closed forms).

Expected values are docs/model.md's formulas, written next to each check; none comes from a
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
from hasim.spec.scenario import scenario_from_dict

RTT = 0.0005  # NetworkSpec default: one LAN round trip
FAULT_AT = 1.0
KS_LEVEL = 0.01  # Kolmogorov-Smirnov test at the 1% level

#: (heartbeat H, election timeout E): etcd defaults; kubespray 2016 (election 10 s; the
#: heartbeat left at etcd's default); current kubespray (250 ms / 5 s). docs/model.md, etcd.
TIMINGS = {
    "etcd-defaults": (0.1, 1.0),
    "kubespray-2016": (0.1, 10.0),
    "kubespray-current": (0.25, 5.0),
}


def tick_rule_elections(h: float, e: float, n: int, pre_vote: bool = False,
                        seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
    """Samples of (election time from the last heartbeat, terms it took) for 3 members
    whose leader dies, by etcd 3.4's raft rules as docs/model.md states them, in closed
    form (not hasim's code):

    - each survivor i fires at X_i = p_i + (R_i - 1) H after the heartbeat: p_i ~ U(0, H)
      the wait to its ticker's next tick, R_i uniform on {E/H, ..., 2E/H - 1};
    - the first, c, is ignored by the other, o, iff o is in CheckQuorum's lease, i.e. has
      ticked fewer than E/H times: R_c = E/H and p_o > p_c. Otherwise c leads a round trip
      (two with pre-vote) after X_c;
    - ignored, without pre-vote: o campaigns in the same term at X_o and is refused (c
      voted for itself); both redraw, and whoever fires next leads: min(X_c + R_c' H,
      X_o + R_o' H) + RTT, in a second term. With pre-vote: o's pre-vote and vote succeed
      at X_o + 2 RTT, in one term."""
    rng = np.random.default_rng(seed)
    k = int(e / h + 1e-9)
    p = rng.uniform(0, h, (n, 2))
    r = rng.integers(k, 2 * k, (n, 2))
    x = p + (r - 1) * h
    c = np.argmin(x, axis=1)
    o = 1 - c
    rows = np.arange(n)
    xc, xo = x[rows, c], x[rows, o]
    ignored = (r[rows, c] == k) & (p[rows, o] > p[rows, c])
    if pre_vote:
        return np.where(ignored, xo, xc) + 2 * RTT, np.ones(n)
    again = np.minimum(xc + rng.integers(k, 2 * k, n) * h, xo + rng.integers(k, 2 * k, n) * h)
    return np.where(ignored, again, xc) + RTT, np.where(ignored, 2.0, 1.0)


@cache
def _election(hb: float, e: float, members: int, seed: int, second_at: float | None,
              pre_vote: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Crash the initial leader (etcd1, the first member) at FAULT_AT for good; optionally
    crash etcd2 too at ``second_at``. Returns (elections, etcd state changes)."""
    faults = [{"kind": "crash", "at": f"{FAULT_AT}s", "target": "etcd[0]/etcd"}]
    if second_at is not None:
        faults.append({"kind": "crash", "at": f"{second_at}s", "target": "etcd[1]/etcd"})
    sc = scenario_from_dict({
        "name": "etcd-leader-loss",
        "cluster": {"generate": {"masters": 1, "etcd": members, "nodes": 0}},
        "etcd": {"heartbeat_interval": f"{hb}s", "election_timeout": f"{e}s",
                 "pre_vote": pre_vote},
        "faults": faults,
        # a second term ends by the last heartbeat + 3E; a round trip later it leads
        "duration": f"{FAULT_AT + 3 * e + 0.5}s",
    })
    res = hasim.simulate(sc, seed=seed)
    st = res.state_changes
    return res.elections, st[st["component"] == "etcd"]


def _samples(hb: float, e: float, members: int, n: int, second_at: float | None = None,
             pre_vote: bool = False) -> pd.DataFrame:
    rows = []
    for seed in range(n):
        el, st = _election(hb, e, members, seed, second_at, pre_vote)
        # the initial leader is the first member, and it is the one the fault took
        assert st.iloc[0]["host"] == "etcd1" and st.iloc[0]["to"] == "leader"
        assert len(el) == 1, f"seed {seed}: expected one election, got {len(el)}"
        rows.append(el.iloc[0])
    df = pd.DataFrame(rows)
    df["rounds"] = df["term"] - 1  # the initial leader held term 1
    return df


def _binomial_ok(count: int, n: int, p: float) -> bool:
    """``count`` of ``n`` is inside the two-sided 99.9 % interval of Binomial(n, p)."""
    lo, hi = stats.binom.ppf([0.0005, 0.9995], n, p)
    return lo <= count <= hi


def _check_leader_loss(hb: float, e: float, members: int, n: int,
                       second_at: float | None = None, pre_vote: bool = False) -> None:
    df = _samples(hb, e, members, n, second_at, pre_vote)
    # docs/model.md (etcd): the leader's last heartbeat went out on its last tick, at most
    # one heartbeat interval before it died.
    assert (df["lost_at"] == FAULT_AT).all()
    assert (df["last_heartbeat_at"] <= FAULT_AT + 1e-12).all()
    assert (df["last_heartbeat_at"] >= FAULT_AT - hb - 1e-12).all()
    # No follower fires before E/H of its ticks, the first of which comes within H of the
    # heartbeat: every election takes at least E - H (+ a round trip) from it; one that
    # took one term at most 2E - H.
    el = df["election_s"].to_numpy()
    trips = 2 if pre_vote else 1
    assert (el >= e - hb + trips * RTT - 1e-9).all(), el.min()
    one = df["rounds"] == 1
    assert (df.loc[one, "election_s"] < 2 * e - hb + trips * RTT + 1e-9).all()
    assert (el < 3 * e + 2 * RTT).all(), el.max()
    # the winner is a survivor, never the dead leader (nor the second casualty)
    dead = {"etcd1"} | ({"etcd2"} if second_at is not None else set())
    assert not set(df["member"]) & dead
    if pre_vote:  # an ignored pre-vote costs no term
        assert (df["rounds"] == 1).all()
    if members == 3 and second_at is None:
        if not pre_vote:  # second terms: H/E of the elections (the closed form's share)
            assert _binomial_ok(int((df["rounds"] > 1).sum()), n, hb / e)
        # distribution: the closed form above, two-sample KS
        ref, ref_rounds = tick_rule_elections(hb, e, 20000, pre_vote)
        p = stats.ks_2samp(el, ref).pvalue
        assert p > KS_LEVEL, f"KS p = {p:.4g} (n = {len(el)})"
        # the closed form's share of second terms is H/E: P(both drew E/H) + P(one did)/2
        if not pre_vote:
            assert abs(float((ref_rounds > 1).mean()) - hb / e) < 0.01


@pytest.mark.parametrize("timing", list(TIMINGS))
def test_election_after_leader_loss_follows_the_tick_rules(timing):
    """3 members, the leader dies: 2 survivors, whose whole-tick timeouts, tick phases and
    CheckQuorum lease give the distribution of ``tick_rule_elections`` (etcd defaults:
    0.9-1.9 s in one term, a tenth of elections in a second term)."""
    hb, e = TIMINGS[timing]
    _check_leader_loss(hb, e, members=3, n=150)


@pytest.mark.parametrize("timing", ["etcd-defaults", "kubespray-current"])
def test_pre_vote_elects_in_one_term(timing):
    """``etcd.pre_vote``: the follower the lease ignored does not lose a term; the other
    one wins at its own timeout (docs/model.md, etcd)."""
    hb, e = TIMINGS[timing]
    _check_leader_loss(hb, e, members=3, n=150, pre_vote=True)


def test_second_terms_come_from_the_lease() -> None:
    """Every second term in a 3-member election is one where the first candidate fired at
    its minimum tick count E/H (so within [E - H, E) of the heartbeat) and was ignored:
    its election ends after the other's timeout and a fresh draw, at least 2E - H."""
    hb, e = TIMINGS["etcd-defaults"]
    df = _samples(hb, e, 3, 150)
    multi = df[df["rounds"] > 1]
    assert not multi.empty  # 15 expected of 150
    assert (multi["rounds"] == 2).all()
    assert (multi["election_s"] >= 2 * e - hb + RTT - 1e-9).all()


def test_election_with_four_survivors():
    """5 members, the leader dies: the first of 4 survivors to fire wins unless fewer than
    two others are out of their lease (it needs 3 votes of 5). The bounds of the 3-member
    case hold; a second term needs the first candidate to fire at E/H ticks, so it comes
    at most as often as some survivor draws E/H: 1 - (1 - H/E)^4."""
    hb, e = TIMINGS["etcd-defaults"]
    _check_leader_loss(hb, e, members=5, n=150)
    df = _samples(hb, e, 5, 150)
    bound = 1 - (1 - hb / e) ** 4
    assert (df["rounds"] > 1).sum() <= stats.binom.ppf(0.9995, len(df), bound)


def test_second_member_dying_before_any_timeout_does_not_delay_the_election():
    """5 members; the leader dies, and another member at t + E/2, before any follower's
    timer can fire (those fire at last_hb + E - H at the earliest). The other followers'
    timers keep running (etcd raft: electionElapsed is reset only by a leader's or
    candidate's message), so the bounds of the 3-member case hold."""
    hb, e = TIMINGS["etcd-defaults"]
    _check_leader_loss(hb, e, members=5, n=150, second_at=FAULT_AT + e / 2)


@pytest.mark.slow
@pytest.mark.parametrize("timing", list(TIMINGS))
def test_election_distribution_many_samples(timing):
    hb, e = TIMINGS[timing]
    _check_leader_loss(hb, e, members=3, n=1500)


def _stop(target: str) -> pd.DataFrame:
    sc = scenario_from_dict({
        "name": "etcd-stop",
        "cluster": {"generate": {"masters": 1, "etcd": 3, "nodes": 0}},
        "faults": [{"kind": "stop", "at": f"{FAULT_AT}s", "target": target}],
        "duration": f"{FAULT_AT + 3.5}s",
    })
    return hasim.simulate(sc, seed=0).elections


def test_a_stopped_leader_hands_over_without_an_election():
    """SIGTERM stops etcd through EtcdServer.Stop, which transfers leadership first
    (docs/model.md, etcd): the next member leads in the next term two round trips later
    (MsgTimeoutNow, then its vote), not after an election timeout."""
    el = _stop("etcd[0]/etcd")
    assert len(el) == 1
    row = el.iloc[0]
    assert row["member"] != "etcd1" and row["term"] == 2
    assert row["time"] - FAULT_AT == pytest.approx(2 * RTT)


def test_a_stopped_follower_changes_no_leader():
    assert _stop("etcd[1]/etcd").empty


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
    # the leader steps down when it loses its majority (CheckQuorum; docs/model.md, etcd)
    down = etcd[(etcd["time"] == DOWN_AT) & (etcd["to"] == "follower")]
    assert list(down["host"]) == ["master1"]
    # no member becomes leader while 2 of 3 are down
    won = etcd[etcd["to"] == "leader"]
    assert won[(won["time"] > 0) & (won["time"] < DOWN_AT + DOWN_FOR)].empty
    # after the two return, a leader within 2E + RTT: the survivor campaigns again within
    # [E, 2E) of its last campaign (whole ticks), the returning members time out within
    # [E, 2E) of boot and know no leader (no lease), so the first campaign wins.
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

PROXY_RESTART = 15.0  # kubespray's etcd-proxy unit: RestartSec=15s (docs/model.md, etcd access)


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
    (master1): its requests fail for the whole outage of that member (docs/model.md, etcd
    access)."""
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
    that follows the leader's (master1's) death is over (< 3E: a second term at most),
    the workers' lease writes through master1's apiserver succeed during the member's
    outage."""
    res = _multiaccess()
    req = res.requests
    el = res.elections
    assert len(el) == 1 and el["lost_at"].iloc[0] == DOWN_AT
    assert el["time"].iloc[0] - DOWN_AT < 3 * 1.0 + 2 * RTT
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
