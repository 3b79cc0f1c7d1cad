"""Summaries with confidence intervals (hasim.batches.summarize), on hand-made result tables whose
figures are computed here by hand: the Student t interval from its formula and a t table
value, the latency figures from the definition (cut-off clients only, finite ones)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from hasim.batches.results import ResultStore
from hasim.batches.summarize import format_summary, mean_ci, summarize, write_summary

# t(0.975, n-1) from a printed t table: 12.706 (1 df), 3.182 (3 df).
T1, T3 = 12.7062, 3.18245


def test_mean_ci_is_the_student_t_interval() -> None:
    m, lo, hi, n = mean_ci([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(((1.5**2) * 2 + (0.5**2) * 2) / 3)  # sample sd = 1.29099
    assert (m, n) == (2.5, 4)
    assert hi - m == pytest.approx(T3 * sd / 2, rel=1e-4)
    assert m - lo == pytest.approx(hi - m)
    m, lo, hi, n = mean_ci([10.0, 12.0])
    assert (m, n) == (11.0, 2) and hi - m == pytest.approx(T1 * math.sqrt(2) / math.sqrt(2),
                                                           rel=1e-4)
    m, lo, hi, n = mean_ci([5.0])  # one replication: the interval is unknown, not zero
    assert m == 5.0 and math.isnan(lo) and math.isnan(hi) and n == 1
    m, lo, hi, n = mean_ci([3.0, 3.0, math.nan, math.inf])  # non-finite left out
    assert (m, lo, hi, n) == (3.0, 3.0, 3.0, 2)
    assert math.isnan(mean_ci([])[0])


def _run(store: ResultStore, rid: str, point: str, rep: int, latencies: list[float],
         not_ready: list[float], checks: dict[str, float], fractions: list[float],
         status: str = "ok") -> dict[str, object]:
    row: dict[str, object] = {
        "run_id": rid, "scenario": "mode", "path": None, "point": point,
        "balancers.local.fail_timeout": 5.0 if point == "a" else 10.0,
        "replication": rep, "seed": rep, "status": status,
        "error": None if status == "ok" else "Boom: x", "wall_s": 0.1, "apiservers": 3,
        "failover_mean_s": -1.0,  # the engine's own figure: must not be confused with ours
    }
    fo = pd.DataFrame({"client": [f"c{i}" for i in range(len(latencies))],
                       "latency_s": latencies})
    ns = pd.DataFrame({"host": [f"n{i}" for i in range(len(not_ready))],
                       "duration_s": not_ready})
    hc = pd.DataFrame({"source": ["lb"] * len(checks), "target": ["m1/apiserver"] * len(checks),
                       "kind": list(checks), "count": [1] * len(checks),
                       "rate_per_s": list(checks.values())})
    av = pd.DataFrame({"client": [f"c{i}" for i in range(len(fractions))],
                       "fraction": fractions})
    tables = ({"failovers": fo, "node_status": ns, "health_checks": hc, "availability": av}
              if status == "ok" else {})
    store.write_run(rid, row, tables, {})
    return row


@pytest.fixture
def result_dir(tmp_path: Path) -> Path:
    store = ResultStore(tmp_path)
    inf = math.inf
    rows = [
        # point a: rep 0 has clients 0 (not cut off), 2, 4, and one that never recovered
        _run(store, "r0", "a", 0, [0.0, 2.0, 4.0, inf], [30.0, 10.0],
             {"active": 0.6, "passive": 0.3, "connection": 1.5}, [1.0, 0.5]),
        _run(store, "r1", "a", 1, [0.0, 6.0], [20.0], {"active": 0.9, "connection": 3.0},
             [1.0, 1.0]),
        _run(store, "r2", "a", 2, [], [], {}, [], status="error"),
        # point b: nobody cut off (0 s), nothing NotReady
        _run(store, "r3", "b", 0, [0.0, 0.0], [], {}, [1.0]),
    ]
    store.write_index(rows)
    return tmp_path


def test_summary_per_point_from_hand_computed_figures(result_dir: Path) -> None:
    s = summarize(result_dir).set_index("point")
    a, b = s.loc["a"], s.loc["b"]
    assert (a["reps"], a["errors"], b["reps"], b["errors"]) == (3, 1, 1, 0)
    assert a["balancers.local.fail_timeout"] == 5.0
    # rep 0: cut off 2, 4, inf -> finite 2, 4: mean 3, median 3, p95 2 + 0.95 x 2 = 3.9,
    # max 4, never 1, cut off 3. rep 1: cut off 6 -> 6 everywhere, never 0, cut off 1.
    for metric, r0, r1 in [("failover_mean_s", 3.0, 6.0), ("failover_median_s", 3.0, 6.0),
                           ("failover_p95_s", 3.9, 6.0), ("failover_max_s", 4.0, 6.0),
                           ("never_recovered", 1.0, 0.0), ("clients_cut_off", 3.0, 1.0),
                           # NotReady node-s: 30 + 10 and 20
                           ("not_ready_node_s", 40.0, 20.0),
                           # (active + passive) / 3 apiservers: 0.9 / 3 and 0.9 / 3
                           ("checks_per_apiserver_s", 0.3, 0.3),
                           ("connections_per_apiserver_s", 0.5, 1.0),
                           ("availability_mean", 0.75, 1.0)]:
        mean = (r0 + r1) / 2
        half = T1 * abs(r0 - r1) / math.sqrt(2) / math.sqrt(2)
        assert a[metric] == pytest.approx(mean), metric
        assert a[f"{metric}_ci_high"] - mean == pytest.approx(half, rel=1e-4, abs=1e-12), metric
    # Nobody cut off: latency figures 0 (not missing); one replication: interval unknown.
    assert b["failover_mean_s"] == 0.0 and b["not_ready_node_s"] == 0.0
    assert math.isnan(b["failover_mean_s_ci_low"])


def test_write_summary_and_its_text(result_dir: Path) -> None:
    path, df = write_summary(result_dir)
    back = pd.read_csv(path)
    assert list(back["point"]) == ["a", "b"] and len(back.columns) == len(df.columns)
    text = format_summary(df)
    assert "mode" in text and "errors" in text
    assert "4.5 ±19.1" in text  # failover mean: (3 + 6) / 2 ± 12.706 x 1.5


def test_a_sampled_run_counts_each_row_for_the_nodes_it_stands_for(tmp_path: Path) -> None:
    """A ``weight`` column (sampled clients): the figures of the full cluster, as if each
    row were repeated ``weight`` times. By hand: latencies 2, 4, 8 s standing for 1, 3
    and 1 clients, one never-recovered client standing for 2: the sample 2, 4, 4, 4, 8
    (mean 4.4; inverted CDF: median 4, p95 8), 5 + 2 cut off, 2 never back."""
    store = ResultStore(tmp_path)
    inf = math.inf
    row: dict[str, object] = {
        "run_id": "s0", "scenario": "sampled", "path": None, "point": "base",
        "replication": 0, "seed": 0, "status": "ok", "error": None, "wall_s": 0.1,
        "apiservers": 2,
    }
    fo = pd.DataFrame({"client": ["c0", "c1", "c2", "c3", "m1"],
                       "latency_s": [2.0, 4.0, 8.0, inf, 0.0],
                       "weight": [1.0, 3.0, 1.0, 2.0, 1.0]})
    # NotReady: 10 s for a node standing for 4, 30 s for one standing for itself.
    ns = pd.DataFrame({"host": ["n0", "m1"], "duration_s": [10.0, 30.0], "weight": [4.0, 1.0]})
    # Active checks are exact (weight 1); nginx re-probes and connections of a sampled
    # node stand for its class: (0.5 + 0.1 x 10) / 2 apiservers, 0.2 x 10 / 2.
    hc = pd.DataFrame({"source": ["n0/lb", "n1/lb", "n1/lb"],
                       "target": ["m1/apiserver"] * 3,
                       "kind": ["active", "passive", "connection"], "count": [1, 1, 1],
                       "rate_per_s": [0.5, 0.1, 0.2], "weight": [1.0, 10.0, 10.0]})
    # Availability 0.5 for a client standing for 3, 1.0 for one standing for 1: 0.625.
    av = pd.DataFrame({"client": ["c0", "m1"], "fraction": [0.5, 1.0], "weight": [3.0, 1.0]})
    store.write_run("s0", row, {"failovers": fo, "node_status": ns, "health_checks": hc,
                                "availability": av}, {})
    store.write_index([row])
    s = summarize(tmp_path).iloc[0]
    expected = {"failover_mean_s": 4.4, "failover_median_s": 4.0, "failover_p95_s": 8.0,
                "failover_max_s": 8.0, "clients_cut_off": 7.0, "never_recovered": 2.0,
                "not_ready_node_s": 70.0, "checks_per_apiserver_s": 0.75,
                "connections_per_apiserver_s": 1.0, "availability_mean": 0.625}
    for metric, value in expected.items():
        assert s[metric] == pytest.approx(value), metric
