"""hasim.lab.figures on small hand-made lab tables: each strip's bar sits at the median of
its trials, and the findings count the verdicts and name the largest gap of the table
they are given."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from hasim.analysis.report import figure_problems
from hasim.lab import chain_figure, chain_finding, lb_figure, lb_finding


def _long(rows: list[tuple[str, str, str, list[float]]], key: str) -> pd.DataFrame:
    return pd.DataFrame([{key: cell, "metric": m, "source": src, "value": v, "trial": t}
                         for cell, m, src, vs in rows for t, v in enumerate(vs)])


LB = _long([("nginx-crash", metric, src, vals)
            for metric in ("detect_s", "failover_s", "check_rate_per_s")
            for src, vals in (("real", [1.0, 2.0, 6.0]), ("sim", [1.5, 2.5, 3.0]))]
           + [("haproxy-blackhole", metric, src, vals)
              for metric in ("detect_s", "failover_s", "check_rate_per_s")
              for src, vals in (("real", [4.0, 5.0]), ("sim", [4.5, 5.5]))], "scenario")


def test_each_strip_has_its_median_bar() -> None:
    fig = lb_figure(LB)
    try:
        assert figure_problems(fig) == []
        assert len(fig.axes) == 3
        bars = [line.get_xdata()[0] for line in fig.axes[0].get_lines()]
        # per cell, the real median then the simulated one
        assert bars == pytest.approx([np.median([1.0, 2.0, 6.0]), np.median([1.5, 2.5, 3.0]),
                                      np.median([4.0, 5.0]), np.median([4.5, 5.5])])
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
            "nginx-crash", "haproxy-blackhole"]
    finally:
        plt.close(fig)


def test_lb_finding_counts_the_verdicts_and_names_the_largest_gap() -> None:
    table = pd.DataFrame({
        "scenario": ["a", "a", "b", "b"], "metric": ["detect_s", "failover_s"] * 2,
        "real": [1.0, 2.0, 4.0, 8.0], "sim": [1.1, 2.0, 3.0, np.nan],
        "rel_diff": [0.1, 0.0, -0.25, np.nan], "agrees": [True, True, False, None]})
    text = lb_finding(table)
    assert "on 2 of 3 judged (cell, metric) pairs over 2 cells" in text
    assert "detect_s of b, real 4 vs simulated 3 (-25 %)" in text


def test_chain_figure_and_finding() -> None:
    chain = _long([("etcd defaults", "election_s", "real", [1.2, 1.4, 1.3]),
                   ("etcd defaults", "election_s", "sim", [1.1, 1.2]),
                   ("keepalived kill", "move_s", "real", [3.0]),
                   ("keepalived kill", "move_s", "sim", [3.9, 4.1])], "cell")
    judged = pd.DataFrame({"cell": ["etcd defaults", "keepalived kill"],
                           "metric": ["election_s", "move_s"], "real": [1.3, 3.0],
                           "sim": [1.15, 4.0], "agrees": [True, False], "contended": [2, 0]})
    text = chain_finding(judged)
    assert "on 1 of 2 judged (cell, metric) pairs" in text
    assert "move_s of keepalived kill, real 3 s vs simulated 4 s" in text
    assert "2 real trial(s) taken while the machine was contended" in text
    fig = chain_figure(chain, judged)
    try:
        assert figure_problems(fig) == []
        assert len(fig.axes[0].get_lines()) == 4
    finally:
        plt.close(fig)
