"""The lab's figures and findings (notebook 04): every real trial beside the simulated
ones, per cell and metric, and the verdicts of :mod:`hasim.lab.compare` and
:mod:`hasim.lab.chain` in a sentence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from hasim.analysis.report import fmt  # noqa: E402

#: The nginx/HAProxy lab's metrics drawn, with their axis labels.
LB_METRICS = {"detect_s": "time until the LB stops using the dead master (s)",
              "failover_s": "time the clients are cut off (s)",
              "check_rate_per_s": "health checks per healthy master per second (1/s)"}
SOURCES = (("real", "tab:red"), ("sim", "tab:blue"))


def strips_on(ax: Any, rows: Sequence[tuple[str, pd.DataFrame]], size: float = 12,
              alpha: float = 0.5) -> None:
    """One pair of strips per row (label, long frame with ``source`` and ``value``): the
    real trials in red above the simulated ones in blue, each with a bar at its median."""
    for k, (_, sel) in enumerate(rows):
        for j, (source, color) in enumerate(SOURCES):
            v = sel.loc[sel["source"] == source, "value"].dropna()
            y = 2 * k + 0.8 * j
            ax.scatter(v, [y] * len(v), s=size, alpha=alpha, color=color,
                       label=source if k == 0 else None)
            if len(v):
                ax.plot([v.median()] * 2, [y - 0.3, y + 0.3], color=color, lw=2.5)
    ax.set_yticks([2 * k + 0.4 for k in range(len(rows))], [r[0] for r in rows], fontsize=8)


def lb_figure(df: pd.DataFrame, metrics: Sequence[str] = tuple(LB_METRICS)) -> Any:
    """A panel per metric of the nginx/HAProxy lab, a pair of strips per cell."""
    cells = list(dict.fromkeys(df["scenario"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(13, 1.2 + 0.8 * len(cells)),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        of = df[df["metric"] == metric]
        strips_on(ax, [(cell, of[of["scenario"] == cell]) for cell in cells])
        ax.set_xlabel(LB_METRICS.get(metric, metric))
        ax.set_title(metric, fontsize=9)
        ax.set_ylabel("calibration cell (LB, timings, fault)", fontsize=8)
    axes[0][0].legend()
    n_real = df.loc[df["source"] == "real", "trial"].nunique()
    fig.suptitle(f"Does the simulator predict what real nginx and HAProxy do? ({n_real} real "
                 "trial(s) per cell; bars: medians)", fontsize=11)
    fig.tight_layout()
    return fig


def lb_finding(table: pd.DataFrame) -> str:
    """How many judged (cell, metric) pairs of :func:`~hasim.lab.compare.side_by_side`'s
    table agree, and the largest relative gap."""
    judged = table[table["agrees"].notna()]
    if judged.empty:
        return "**Finding.** No (cell, metric) pair could be judged."
    ok = judged[judged["agrees"].astype(bool)]
    worst = judged.assign(gap=judged["rel_diff"].abs().fillna(0)).sort_values("gap").iloc[-1]
    return (f"**Finding.** The simulator's median agrees with the real software's on {len(ok)} "
            f"of {len(judged)} judged (cell, metric) pairs over {judged['scenario'].nunique()} "
            f"cells. The largest gap: {worst['metric']} of {worst['scenario']}, real "
            f"{fmt(float(worst['real']), digits=3)} vs simulated "
            f"{fmt(float(worst['sim']), digits=3)} ({fmt(100 * float(worst['rel_diff']))} %).")


#: Ticks of the chain figure's log time axis, in seconds.
CHAIN_TICKS = [0.2, 0.5, 1, 2, 3, 5, 7, 10, 20, 30, 45]


def chain_figure(chain: pd.DataFrame, judged: pd.DataFrame) -> Any:
    """A pair of strips per row of :func:`~hasim.lab.chain.chain_table`'s table (a cell
    and metric of the etcd, keepalived and client-go cells, judged or not), on one log
    time axis."""
    rows = [(f"{r.cell} · {r.metric}",
             chain[(chain["cell"] == r.cell) & (chain["metric"] == r.metric)])
            for r in judged.itertuples()]
    fig, ax = plt.subplots(figsize=(10, 0.9 + 0.45 * len(rows)))
    strips_on(ax, rows, size=10, alpha=0.4)
    ax.set_xscale("log")
    ax.set_xticks(CHAIN_TICKS, [f"{t:g}" for t in CHAIN_TICKS])
    ax.minorticks_off()
    ax.set_xlabel("seconds after the fault (log scale)")
    ax.set_ylabel("lab cell and metric (red: real, blue: simulated)", fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title("etcd, keepalived, client-go: real (red) vs simulated (blue); bars: medians",
                 fontsize=10)
    fig.tight_layout()
    return fig


def chain_finding(judged: pd.DataFrame) -> str:
    """How many of the chain's judged pairs agree, the largest gap in seconds, and how
    many contended real trials were left out."""
    j = judged[judged["agrees"].notna()]
    ok = j[j["agrees"].astype(bool)]
    left = int(judged.drop_duplicates("cell")["contended"].sum())
    note = (f" {left} real trial(s) taken while the machine was contended were left out; a "
            "cell with no other trial is not judged." if left else "")
    if j.empty:
        return "**Finding.** No cell could be judged:" + note
    worst = j.assign(gap=(j["sim"] - j["real"]).abs()).sort_values("gap").iloc[-1]
    return (f"**Finding.** The simulator agrees with the real etcd, keepalived and client-go "
            f"on {len(ok)} of {len(j)} judged (cell, metric) pairs; the largest gap: "
            f"{worst['metric']} of {worst['cell']}, real {fmt(float(worst['real']), 's')} vs "
            f"simulated {fmt(float(worst['sim']), 's')}." + note)
