"""The plotting building blocks of hasim.analysis.plots, on values whose ECDF and heat map
can be written down by hand."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hasim.analysis.plots import Ecdf, ecdf_on, heatmap_on


def test_an_ecdf_counts_the_never_recovered_and_leaves_nan_out() -> None:
    e = Ecdf.of([3.0, np.inf, 1.0, np.nan, 2.0])
    assert e is not None
    assert e.n == 4 and e.never == 1
    assert e.xs.tolist() == [1.0, 2.0, 3.0]
    assert e.ys.tolist() == [0.25, 0.5, 0.75]  # one of four never gets back
    assert e.top == 3.0
    assert Ecdf.of([np.nan]) is None


def test_ecdf_on_draws_from_the_left_edge_and_says_who_never_got_back() -> None:
    fig, ax = plt.subplots()
    try:
        ecdf_on(ax, {"a": [0.0, 5.0, np.inf], "empty": []}, xmin=0.1)
        (line,) = ax.get_lines()
        assert line.get_label() == "a (1/3 never back)"
        # 0 counts at the left edge: a third of the clients were never hurt
        assert line.get_xdata()[:3].tolist() == [0.1, 0.1, 5.0]
        assert line.get_ydata()[:3].tolist() == [0.0, 1 / 3, 2 / 3]
        assert ax.get_xscale() == "log"
    finally:
        plt.close(fig)


def test_a_heat_map_annotates_every_cell() -> None:
    grid = pd.DataFrame([[1.0, np.nan], [3.0, 40.0]], index=["a", "b"], columns=["x", "y"])
    fig, ax = plt.subplots()
    try:
        heatmap_on(ax, grid, label="things")
        texts = [t.get_text() for t in ax.texts]
        assert texts == ["1", "-", "3", "40"]
        white = [t.get_text() for t in ax.texts if t.get_color() == "white"]
        assert white == ["40"]  # only the cell above 0.6 of the largest
        assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
        assert len(fig.axes) == 2  # the colour bar
    finally:
        plt.close(fig)
