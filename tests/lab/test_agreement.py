"""The simulator against the lab: nginx and HAProxy at short timings x crash and
blackhole, a few real trials each (``conftest.quick_matrix``).

The simulator's median must be within 15 % (or 0.3 s, whichever is larger) of the real
median for detection time and failover latency, and within 5 % for the health-check
rate (``hasim.lab.TOLERANCE``), over the real trials in the regime the simulator models:
as many LB processes marking the faulted backend down (``detect_workers``) as in the
simulator. nginx's worker 0 takes every connection while it is idle (docs/lab.md, lab
model change 2), and the simulator models that; a real trial where worker 0 was busy
when a long client connected has worker 1 hold it, both workers meet the fault, and
least_conn's per-worker counts change who fails over when (about 1 s later in the
blackhole cell). Such trials came one in six to one in twelve on the test machine; three
trials then had two of them, and the real median left the model's, in a few percent of
runs. Each cell must still have a trial in the modelled regime.

Every (cell, metric) must agree: a disagreement is a model change to make (docs/lab.md
lists the four that made them agree), never a test expected to fail.

Independently of the simulator, the real measurements are checked against docs/model.md's
closed forms (nginx, HAProxy), so that the lab itself is known to measure what it claims.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from hasim.lab import agrees, side_by_side

from .conftest import TRIALS

pytestmark = pytest.mark.needs_lab

CELLS = ["nginx-short-crash", "nginx-short-blackhole", "haproxy-short-crash",
         "haproxy-short-blackhole"]
METRICS = ["detect_s", "failover_s", "check_rate_per_s"]

#: HAProxy parameters (docs/model.md) of the short-timing HAProxy cells (hasim.lab.matrix).
INTER, FALL, FASTINTER = 1.0, 2, 1.0
#: Slack for process scheduling, the fault's own timing and a check's few milliseconds.
EPS = 0.1


def _modelled(df: pd.DataFrame, cell: str) -> pd.DataFrame:
    """The cell's rows: every simulated trial, and the real trials in the regime the
    simulator models (its median ``detect_workers``; module docstring)."""
    g = df[df["scenario"] == cell]
    workers = g[g["metric"] == "detect_workers"]
    sim = workers.loc[workers["source"] == "sim", "value"].median()
    real = workers[workers["source"] == "real"]
    keep = set(real.loc[real["value"] == sim, "trial"])
    return g[(g["source"] == "sim") | g["trial"].isin(keep)]


def test_only_real_trials_in_the_modelled_regime_are_compared() -> None:
    """On made-up trials: two of three real ones had both workers detect (1 s later, as
    in the nginx blackhole cell); their median would disagree, the modelled trial's
    agrees."""
    rows = [("sim", t, "detect_workers", 1.0) for t in range(100)]
    rows += [("sim", t, "failover_s", 2.25) for t in range(100)]
    rows += [("real", 0, "detect_workers", 1.0), ("real", 0, "failover_s", 2.28),
             ("real", 1, "detect_workers", 2.0), ("real", 1, "failover_s", 3.27),
             ("real", 2, "detect_workers", 2.0), ("real", 2, "failover_s", 3.30)]
    df = pd.DataFrame(rows, columns=["source", "trial", "metric", "value"]).assign(scenario="c")
    whole = side_by_side(df).set_index("metric").loc["failover_s"]
    assert whole.real == 3.27 and not whole.agrees
    mine = _modelled(df, "c")
    assert set(mine.loc[mine["source"] == "real", "trial"]) == {0}
    row = side_by_side(mine).set_index("metric").loc["failover_s"]
    assert row.real == 2.28 and row.n_real == 1 and row.agrees


def test_real_trials_taken_under_contention_are_left_out_and_counted() -> None:
    """On made-up trials: the one real trial flagged as contended (hasim.lab.contention)
    would move the real median; it is left out, counted, and its machine figures are not
    compared."""
    rows = [("sim", t, "failover_s", 2.25) for t in range(100)]
    rows += [("real", 0, "failover_s", 2.28), ("real", 0, "contended", 0.0),
             ("real", 0, "load1", 0.3),
             ("real", 1, "failover_s", 5.00), ("real", 1, "contended", 1.0),
             ("real", 1, "load1", 9.0),
             ("real", 2, "failover_s", 2.30), ("real", 2, "contended", 0.0),
             ("real", 2, "load1", 0.4)]
    df = pd.DataFrame(rows, columns=["source", "trial", "metric", "value"]).assign(scenario="c")
    table = side_by_side(df).set_index("metric")
    assert list(table.index) == ["failover_s"]
    row = table.loc["failover_s"]
    assert row.real == 2.29 and row.n_real == 2 and row.contended == 1 and row.agrees
    assert not row.all_contended
    # Every real trial contended: all are judged, and the table says so.
    every = df.assign(value=df["value"].where(df["metric"] != "contended", 1.0))
    row = side_by_side(every).set_index("metric").loc["failover_s"]
    assert row.all_contended and row.n_real == 3 and row.real == 2.30 and row.agrees


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_has_real_trials_in_the_modelled_regime(
        quick_matrix: tuple[object, pd.DataFrame], cell: str) -> None:
    _, df = quick_matrix
    all_real = set(df.loc[(df["scenario"] == cell) & (df["source"] == "real"), "trial"])
    mine = _modelled(df, cell)
    kept = set(mine.loc[mine["source"] == "real", "trial"])
    assert len(all_real) == TRIALS and kept, (
        f"{cell}: {len(kept)} of {len(all_real)} real trials with as many detecting LB "
        f"processes as the simulator")


@pytest.mark.parametrize(("cell", "metric"), [(c, m) for c in CELLS for m in METRICS],
                         ids=[f"{c}-{m}" for c in CELLS for m in METRICS])
def test_simulator_median_agrees_with_the_real_median(
        quick_matrix: tuple[object, pd.DataFrame], cell: str, metric: str) -> None:
    _, df = quick_matrix
    table = side_by_side(_modelled(df, cell))
    row = table[(table["scenario"] == cell) & (table["metric"] == metric)].iloc[0]
    assert row.n_real >= 1 and row.n_sim >= 100
    assert agrees(metric, row.real, row.sim), (
        f"{cell} {metric}: real median {row.real:.3f}, sim median {row.sim:.3f} "
        f"({row.rel_diff:+.1%})")


def _real(df: pd.DataFrame, cell: str, metric: str) -> list[float]:
    sel = df[(df["scenario"] == cell) & (df["metric"] == metric) & (df["source"] == "real")]
    return [float(v) for v in sel["value"]]


@pytest.mark.parametrize("cell", ["nginx-short-crash", "nginx-short-blackhole"])
def test_nginx_sends_no_health_checks(quick_matrix: tuple[object, pd.DataFrame],
                                      cell: str) -> None:
    """docs/model.md, nginx: nginx OSS has no active checks; the healthy stubs saw no /healthz."""
    _, df = quick_matrix
    assert _real(df, cell, "check_rate_per_s") == [0.0] * TRIALS


@pytest.mark.parametrize("cell", ["haproxy-short-crash", "haproxy-short-blackhole"])
def test_haproxy_check_rate_is_one_per_inter(quick_matrix: tuple[object, pd.DataFrame],
                                             cell: str) -> None:
    """docs/model.md, closed forms: a healthy server gets 1 / (inter + d) checks per second, d
    being a
    check's few milliseconds on loopback."""
    _, df = quick_matrix
    for rate in _real(df, cell, "check_rate_per_s"):
        assert 0.95 / INTER <= rate <= 1.0 / INTER + 1e-3


def test_haproxy_marks_a_crashed_server_down_within_the_model_window(
        quick_matrix: tuple[object, pd.DataFrame]) -> None:
    """docs/model.md, HAProxy: T = U(0, inter) + fall*d + (fall-1)*fastinter, d one round trip."""
    _, df = quick_matrix
    for t in _real(df, "haproxy-short-crash", "detect_s"):
        assert (FALL - 1) * FASTINTER - EPS <= t <= INTER + (FALL - 1) * FASTINTER + EPS


def test_haproxy_marks_a_blackholed_server_down_within_the_model_window(
        quick_matrix: tuple[object, pd.DataFrame]) -> None:
    """docs/model.md, HAProxy: d = min(inter, timeout connect) = inter when `timeout check` is
    set."""
    _, df = quick_matrix
    d = INTER
    lo = FALL * d + (FALL - 1) * FASTINTER
    for t in _real(df, "haproxy-short-blackhole", "detect_s"):
        assert lo - EPS <= t <= INTER + lo + EPS


def test_nginx_detects_a_blackholed_server_only_after_its_connect_timeout(
        quick_matrix: tuple[object, pd.DataFrame]) -> None:
    """docs/model.md, nginx: only a failed connect counts, and a blackholed one fails after
    ``proxy_connect_timeout`` (1 s in kubespray's nginx.conf)."""
    _, df = quick_matrix
    for t in _real(df, "nginx-short-blackhole", "detect_s"):
        assert t >= 1.0 - 0.02 and math.isfinite(t)



def test_the_chain_table_judges_each_part_and_a_cell_with_only_contended_trials() -> None:
    """On made-up trials of the etcd, keepalived and client-go parts (hasim.lab.chain)."""
    from hasim.lab import chain_table

    rows = []
    for t in range(100):
        rows += [("etcd", "etcd etcd-defaults", "sim", t, "election_s", 1.2),
                 ("clientgo", "client-go nginx-watch", "sim", t, "lost_s", 2.0),
                 ("clientgo", "client-go nginx-watch", "sim", t, "back_s", 2.0)]
    rows += [("etcd", "etcd etcd-defaults", "real", 0, "election_s", 1.25),
             ("etcd", "etcd etcd-defaults", "real", 0, "contended", 1.0),
             ("clientgo", "client-go nginx-watch", "real", 0, "lost_s", 2.1),
             ("clientgo", "client-go nginx-watch", "real", 0, "back_s", 3.1),
             ("clientgo", "client-go nginx-watch", "real", 0, "contended", 0.0)]
    df = pd.DataFrame(rows, columns=["part", "cell", "source", "trial", "metric", "value"])
    table = chain_table(df).set_index(["cell", "metric"])
    # Its one real trial was contended: judged all the same, and marked so.
    etcd = table.loc[("etcd etcd-defaults", "election_s")]
    assert etcd["all_contended"] and etcd["n_real"] == 1 and etcd["contended"] == 1
    assert bool(etcd["agrees"])  # 1.25 s against 1.2 s
    assert bool(table.loc[("client-go nginx-watch", "lost_s"), "agrees"])  # 0.1 s < 0.3 s
    assert not table.loc[("client-go nginx-watch", "back_s"), "agrees"]  # 1.1 s > 0.3 s
