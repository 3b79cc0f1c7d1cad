"""Long-run structural availability against docs/model.md's closed forms, and the exactness of
the structural computation itself.

docs/model.md, closed forms: with exponential times to failure (MTBF) and repair (MTTR) per host, A
= MTBF/(MTBF +
MTTR); default mode, a non-master's path is m[0] alone: A; a perfect LB over M masters:
1 - (1 - A)^M; an etcd majority of n: sum over k >= floor(n/2) + 1 of C(n,k) A^k (1-A)^(n-k).

Each run is 200 simulated years cut into 20 batches of 10 years: a batch spans ~110
failure/repair cycles (MTBF + MTTR = 792 h = 33 days), so batch means are nearly
independent and the run's own 95% batch-means interval is the check. All four runs use
seed 0: they see the SAME fault timeline of the three hosts that fail (the engine gives
each purpose its own random stream, so the same seed draws the same faults), which makes
the four checks correlated rather than four independent 5% chances.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
from scipy import stats

import hasim
from hasim.sim.availability import ETCD_QUORUM, structural
from hasim.sim.records import FaultRecord
from hasim.spec.scenario import scenario_from_dict

MTBF_H, MTTR_H = 720.0, 72.0
A = MTBF_H / (MTBF_H + MTTR_H)  # 0.90909...
YEARS = 200
BATCHES = 20  # engine.py's structural() default


def majority(n: int, a: float = A) -> float:
    """P(a majority of n members up) = sum_{k >= n//2 + 1} C(n,k) a^k (1-a)^(n-k)."""
    return sum(math.comb(n, k) * a**k * (1 - a) ** (n - k) for k in range(n // 2 + 1, n + 1))


def _scenario(generate: dict, targets: str, years: float = YEARS, seed: int = 0,
              local_lb: bool = False):
    raw = {
        "name": "long-run-availability",
        "cluster": {"generate": generate},
        "fidelity": "structural",
        "duration": f"{years * 365 * 24}h",
        "seed": seed,
        "faults": [{"kind": "random", "targets": targets, "mtbf": f"{MTBF_H}h",
                    "mttr": f"{MTTR_H}h", "fault": "crash"}],
    }
    if local_lb:
        raw["cluster"]["vars"] = {"loadbalancer_apiserver_localhost": True}
        raw["balancers"] = {"local": {"kind": "nginx"}}
    return scenario_from_dict(raw)


@cache
def _run(generate: tuple, targets: str, years: float = YEARS, seed: int = 0,
         local_lb: bool = False):
    return hasim.simulate(_scenario(dict(generate), targets, years, seed, local_lb))


# etcd on separate hosts etcd1..5 that never fail; only the masters do
MASTERS_ONLY = (("masters", 3), ("etcd", 5), ("nodes", 2))
ETCD3 = (("masters", 3), ("etcd", 3), ("nodes", 0))  # etcd on the masters
ETCD5 = (("masters", 3), ("etcd", 5), ("nodes", 0))  # etcd1..5 separate


def _ci(res, cls: str) -> tuple[float, float, float]:
    mean, lo, hi = res.summary["availability"][cls]
    return mean, lo, hi


def test_batches_are_long_compared_with_a_cycle():
    batch_h = YEARS * 365 * 24 / BATCHES
    assert batch_h / (MTBF_H + MTTR_H) > 100


def _contains(res, cls: str, expected: float, max_half_width: float = 0.02):
    mean, lo, hi = _ci(res, cls)
    assert (hi - lo) / 2 < max_half_width * expected  # "reasonably tight": < 2%
    assert lo <= expected <= hi, (
        f"{cls}: formula {expected:.6f} outside the run's 95% CI [{lo:.6f}, {hi:.6f}] "
        f"(mean {mean:.6f}, {(mean - expected) / ((hi - lo) / 2):+.2f} half-widths)")


def test_default_mode_non_master_is_m0_availability():
    """Default mode: non-masters use m[0]'s apiserver only; etcd never fails: A."""
    _contains(_run(MASTERS_ONLY, "kube-master"), "kubelet@kube-node", A)


# Seed 0's timeline (the one these checks share): the three masters were down 9.35%,
# 9.63% and 9.11% of the 200 years against 1 - A = 9.09% (+1.0, +2.2, +0.1 standard
# deviations of a 200-year average, sd = sqrt(2 l m / (l + m)^3 / T) = 0.25%). Events that
# need two or three masters down amplify that (all three down 0.1036% of the time against
# (1 - A)^3 = 0.0751%), so one timeline's interval cannot be asked to hold the formula for
# those: its own 95% interval misses it by chance on seed 0 (etcd 2 of 3), and 10-year
# batches hold only ~2.7 all-three-down episodes (every (MTTR/3)/(1-A)^3 = 3.65 years),
# too few for batch means to be normal (the interval covered 25 of 30 seeds). What holds
# instead, and is tested: on its own timeline the structural computation is exact (the
# availability is the share of time the fault records leave a path), and over
# independent timelines the formula holds (test_independent_replications_agree_with_the_
# formulas; with batches long for the rare event, the slow
# test_local_lb_with_batches_long_for_the_rare_event; coverage, the slow
# test_ci_coverage_over_independent_seeds).


def _down(res, duration_h: float) -> dict[str, list[tuple[float, float]]]:
    """Each host's down intervals, read off the run's fault records (``state_changes``:
    a ``fault`` row when a fault starts, ``healed`` when it ends)."""
    st = res.state_changes
    f = st[st["component"] == "fault"]
    out: dict[str, list[tuple[float, float]]] = {}
    for _, rows in f.groupby("cause"):
        start = float(rows.loc[rows["to"] != "healed", "time"].iloc[0])
        healed = rows.loc[rows["to"] == "healed", "time"]
        end = float(healed.iloc[0]) if len(healed) else duration_h * 3600
        out.setdefault(rows["host"].iloc[0], []).append((start, end))
    return out


def _share_with_down(down: dict[str, list[tuple[float, float]]], hosts: list[str], k: int,
                     duration_s: float) -> float:
    """The share of the run during which at least ``k`` of ``hosts`` were down (a sweep
    over the intervals' ends)."""
    events = sorted((t, d) for h in hosts for a, b in down.get(h, [])
                    for t, d in ((a, 1), (b, -1)))
    count, since, total = 0, 0.0, 0.0
    for t, d in events:
        if count >= k:
            total += t - since
        count += d
        since = t
    return total / duration_s


MASTERS = ["master1", "master2", "master3"]


def test_local_lb_over_three_masters_is_exact_on_its_timeline():
    """Local LB over 3 masters, etcd on hosts that never fail: the workers are available
    exactly while not all three masters are down on the run's own fault timeline; and the
    run's interval is tight (< 2 % of the value)."""
    res = _run(MASTERS_ONLY, "kube-master", local_lb=True)
    duration_s = YEARS * 365 * 24 * 3600
    expected = 1 - _share_with_down(_down(res, YEARS * 365 * 24), MASTERS, 3, duration_s)
    mean, lo, hi = _ci(res, "kubelet@kube-node")
    assert mean == pytest.approx(expected, abs=1e-9)
    assert (hi - lo) / 2 < 0.02 * expected
    # and the timeline is the kind the formula describes: all three down about (1 - A)^3
    # of the time (within 50 %: a 200-year sample of a 3.65-year event)
    assert abs((1 - expected) / (1 - A) ** 3 - 1) < 0.5


def test_etcd_two_of_three_is_exact_on_its_timeline():
    """etcd on the 3 masters, random faults on group etcd: a quorum exactly while fewer
    than two members are down on the run's own timeline."""
    res = _run(ETCD3, "etcd")
    duration_s = YEARS * 365 * 24 * 3600
    expected = 1 - _share_with_down(_down(res, YEARS * 365 * 24), MASTERS, 2, duration_s)
    mean, lo, hi = _ci(res, ETCD_QUORUM)
    assert mean == pytest.approx(expected, abs=1e-9)
    assert (hi - lo) / 2 < 0.02 * expected
    assert abs((1 - expected) / (1 - majority(3)) - 1) < 0.25


def test_etcd_three_of_five():
    """5 separate etcd hosts, random faults on group etcd: sum_{k>=3} C(5,k) A^k(1-A)^(5-k)."""
    _contains(_run(ETCD5, "etcd"), ETCD_QUORUM, majority(5))


def test_independent_replications_agree_with_the_formulas():
    """Independent replications (seeds 1-8, 20 years each) pooled: the grand mean of each
    quantity within the 99.9% Student-t interval (7 degrees of freedom) of the formula,
    the SE from the spread between replications. The same formulas, without one
    timeline's luck."""
    n = 8
    t999 = stats.t.ppf(0.9995, n - 1)
    for generate, targets, local, cls, expected in [
        (MASTERS_ONLY, "kube-master", True, "kubelet@kube-node", 1 - (1 - A) ** 3),
        (ETCD3, "etcd", False, ETCD_QUORUM, majority(3)),
    ]:
        means = np.array([_ci(_run(generate, targets, 20, seed, local), cls)[0]
                          for seed in range(1, n + 1)])
        se = means.std(ddof=1) / math.sqrt(n)
        assert abs(means.mean() - expected) < t999 * se, (cls, means.mean(), expected, se)


@pytest.mark.slow
@pytest.mark.parametrize("generate,targets,local,cls,expected", [
    (ETCD3, "etcd", False, ETCD_QUORUM, majority(3)),
    (MASTERS_ONLY, "kube-master", False, "kubelet@kube-node", A),
])
def test_ci_coverage_over_independent_seeds(generate, targets, local, cls, expected):
    """The batch-means 95% interval covers the formula in about 95% of independent runs
    (200 years each): over 40 seeds, more hits than the 0.1% quantile of Binomial(40,
    0.95); and the grand mean is unbiased (99.9% Student-t interval)."""
    n = 40
    hits, means = 0, []
    for seed in range(1000, 1000 + n):
        mean, lo, hi = _ci(_run(generate, targets, YEARS, seed, local), cls)
        hits += lo <= expected <= hi
        means.append(mean)
    assert hits > stats.binom.ppf(0.001, n, 0.95)
    se = np.std(means, ddof=1) / math.sqrt(n)
    assert abs(np.mean(means) - expected) < stats.t.ppf(0.9995, n - 1) * se


# --- the structural computation on hand-made timelines ---------------------------------------


def _graph(generate: dict, **vars_):
    raw = {"name": "g", "cluster": {"generate": generate, "vars": vars_}}
    if vars_.get("loadbalancer_apiserver_localhost"):
        raw["balancers"] = {"local": {"kind": "nginx"}}
    return hasim.build_topology(scenario_from_dict(raw))


def _crash(i: int, at: float, end: float, hosts=(), procs=()):
    return FaultRecord(i, "crash", "", at, end, frozenset(hosts), frozenset(procs))


def test_structural_is_exact_on_a_known_timeline():
    """Masters crash over [10, 20), [15, 30), [18, 25) of 100 s; with a local LB the
    workers are down only while all three are: [18, 20) -> 0.98; in the default mode they
    follow master1: [10, 20) -> 0.90. etcd on separate hosts that never fail."""
    procs = {h: {(h, c) for c in ("apiserver", "etcd-proxy", "kubelet", "kube-proxy",
                                  "controller-manager", "scheduler", "flannel")}
             for h in ("master1", "master2", "master3")}
    faults = [_crash(0, 10, 20, procs=procs["master1"]), _crash(1, 15, 30, procs=procs["master2"]),
              _crash(2, 18, 25, procs=procs["master3"])]
    gen = {"masters": 3, "etcd": 5, "nodes": 2}
    table, ci = structural(_graph(gen, loadbalancer_apiserver_localhost=True), faults, 100.0,
                           batches=4)
    row = table[table["client"] == "node1/kubelet"].iloc[0]
    assert row["fraction"] == pytest.approx(0.98)
    table, _ = structural(_graph(gen), faults, 100.0, batches=4)
    assert table[table["client"] == "node1/kubelet"].iloc[0]["fraction"] == pytest.approx(0.90)
    # batch means: [0,25) loses 18-20 -> 0.92, the other batches 1.0
    assert ci["kubelet@kube-node"][0] == pytest.approx(0.98)


def test_other_apiservers_serve_when_the_first_has_lost_its_etcd():
    """Local LB, etcd on the masters (2016: each apiserver reaches only its own member).
    master1's etcd member crashes for half the run: master1's apiserver cannot serve, but
    masters 2 and 3 can (2 of 3 members: quorum), and a perfect LB uses them: the workers
    stay available (1.0). Before the fix the search stopped at the first apiserver it met
    (master1) and counted the workers down half the time."""
    g = _graph({"masters": 3, "etcd": 3, "nodes": 1}, loadbalancer_apiserver_localhost=True)
    faults = [_crash(0, 0, 50, procs={("master1", "etcd")})]
    table, ci = structural(g, faults, 100.0, batches=4)
    assert table[table["client"] == "node1/kubelet"].iloc[0]["fraction"] == 1.0
    assert table[table["client"] == "master1/kubelet"].iloc[0]["fraction"] == 0.5
    assert ci[ETCD_QUORUM][0] == 1.0


def test_an_isolated_member_does_not_serve():
    """Default mode, etcd on the masters; master1 is cut off from masters 2 and 3 for half
    the run. The majority (2, 3) keeps a leader, but master1's apiserver reaches only its
    own member, which cannot reach that leader: the workers (on master1's apiserver) are
    down for that half. Before, any quorum anywhere counted as serving."""
    g = _graph({"masters": 3, "etcd": 3, "nodes": 1})
    pairs = frozenset({frozenset(("master1", "master2")), frozenset(("master1", "master3"))})
    part = FaultRecord(0, "partition", "master1", 0.0, 50.0, frozenset({"master1"}),
                       frozenset(), pairs)
    table, ci = structural(g, [part], 100.0, batches=4)
    assert table[table["client"] == "node1/kubelet"].iloc[0]["fraction"] == 0.5
    assert ci[ETCD_QUORUM][0] == 1.0
