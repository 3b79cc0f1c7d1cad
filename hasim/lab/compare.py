"""Real vs simulated, side by side: the long table, the median table, the figure.

The long table (``lab.parquet``, docs/interfaces.md) has one row per (source, trial, metric):
``source`` (``real``/``sim``), ``trial``, ``metric``, ``value``, plus ``scenario`` and
``shift`` (the trial's fault shift). The side-by-side table has one row per metric: the
median of each source, their difference, the relative difference, and whether they agree
within :data:`TOLERANCE`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hasim.analysis.plots import save_figure  # noqa: E402
from hasim.lab.contention import METRICS as CONTENTION  # noqa: E402
from hasim.lab.contention import kept_trials  # noqa: E402

COLUMNS = ["source", "trial", "metric", "value", "scenario", "shift"]
#: metric -> (relative, absolute): the sim's median agrees with the real one when
#: |sim - real| <= max(relative * |real|, absolute).
TOLERANCE: dict[str, tuple[float, float]] = {
    "detect_s": (0.15, 0.3),
    "failover_s": (0.15, 0.3),
    "check_rate_per_s": (0.05, 0.0),
}
#: Metrics shown first, in this order; the rest follow alphabetically.
ORDER = ["detect_s", "failover_s", "check_rate_per_s", "detect_workers", "failover_short_s",
         "failover_long_s", "failed_requests", "delayed_requests", "recover_s", "request_s"]


def _median(values: pd.Series) -> float:
    v = values.to_numpy(dtype=float)
    v = v[~np.isnan(v)]
    return float(np.median(v)) if len(v) else math.nan


def agrees(metric: str, real: float, sim: float) -> bool | None:
    """Whether ``sim`` is within the metric's tolerance of ``real`` (None: no tolerance)."""
    if metric not in TOLERANCE:
        return None
    if math.isnan(real) and math.isnan(sim):
        return True
    if math.isnan(real) or math.isnan(sim):
        return False
    if math.isinf(real) or math.isinf(sim):
        return real == sim
    rel, absolute = TOLERANCE[metric]
    return abs(sim - real) <= max(rel * abs(real), absolute) + 1e-12


def contended_trials(df: pd.DataFrame) -> set[tuple[str, int]]:
    """(scenario, trial) of the real trials taken under contention."""
    flags = df[(df["source"] == "real") & (df["metric"] == "contended") & (df["value"] > 0)]
    return {(str(s), int(t)) for s, t in zip(flags["scenario"], flags["trial"], strict=True)}


def side_by_side(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (scenario, metric): medians, difference, relative difference, agreement.

    Real trials taken under contention are left out of the medians and counted
    (``contended``): a disagreement the host caused is not the model's. A scenario whose
    every real trial was contended keeps them all (``all_contended``): a verdict on a
    loaded machine rather than none."""
    bad = contended_trials(df)
    real = df[df["source"] == "real"]
    trials = {(str(s), int(t)) for s, t in zip(real["scenario"], real["trial"], strict=True)}
    every: set[str] = set()
    drop: set[tuple[str, int]] = set()
    for scenario in {s for s, _ in trials}:
        mine = {k for k in trials if k[0] == scenario}
        kept, all_of = kept_trials(mine, bad & mine)
        drop |= mine - kept
        if all_of:
            every.add(scenario)
    if drop:
        key = pd.Series(list(zip(df["scenario"], df["trial"], strict=True)), index=df.index)
        df = df[(df["source"] != "real") | ~key.isin(drop)]
    df = df[~df["metric"].isin(CONTENTION)]  # the machine's figures, not compared
    rows = []
    for (scenario, metric), g in df.groupby(["scenario", "metric"], sort=False):
        real = _median(g.loc[g["source"] == "real", "value"])
        sim = _median(g.loc[g["source"] == "sim", "value"])
        diff = sim - real
        rel = diff / abs(real) if real and math.isfinite(real) and math.isfinite(diff) \
            else (0.0 if diff == 0 else math.nan)
        rows.append({
            "scenario": scenario, "metric": metric, "real": real, "sim": sim, "diff": diff,
            "rel_diff": rel, "n_real": int((g["source"] == "real").sum()),
            "n_sim": int((g["source"] == "sim").sum()), "agrees": agrees(str(metric), real, sim),
            "contended": sum(1 for sc, _ in bad if sc == scenario),
            "all_contended": scenario in every,
        })
    out = pd.DataFrame(rows)
    if len(out):
        rank = {m: i for i, m in enumerate(ORDER)}
        out["_r"] = out["metric"].map(lambda m: rank.get(m, len(ORDER)))
        out = out.sort_values(["scenario", "_r", "metric"], kind="stable").drop(columns="_r")
    return out.reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    """The side-by-side table as text."""
    lines = []
    for scenario, g in table.groupby("scenario", sort=False):
        left = int(g["contended"].iloc[0]) if "contended" in g else 0
        every = bool(g["all_contended"].iloc[0]) if "all_contended" in g else False
        note = ("  (every real trial taken under contention: all judged)" if every
                else f"  ({left} real trial(s) taken under contention left out)" if left
                else "")
        lines.append(f"{scenario}{note}")
        lines.append(f"  {'metric':<18}{'real':>10}{'sim':>10}{'diff':>10}{'rel':>9}"
                     f"{'n':>9}  agree")
        for r in g.itertuples():
            rel = "" if not math.isfinite(r.rel_diff) else f"{100 * r.rel_diff:+.1f}%"
            agree = {True: "yes", False: "NO", None: ""}[r.agrees]
            lines.append(f"  {r.metric:<18}{_num(r.real):>10}{_num(r.sim):>10}"
                         f"{_num(r.diff):>10}{rel:>9}{f'{r.n_real}/{r.n_sim}':>9}  {agree}")
    return "\n".join(lines)


def _num(x: float) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3f}"


def plot(df: pd.DataFrame, path: str | Path, metrics: list[str] | None = None) -> Path:
    """Each metric's trials, real vs simulated, per scenario (dots) with the medians (bars)."""
    metrics = metrics or [m for m in ORDER[:3] if m in set(df["metric"])]
    scenarios = list(dict.fromkeys(df["scenario"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.9 + 0.55 *
                                                       max(len(scenarios), 2) * 2),
                             squeeze=False)
    colors = {"real": "tab:red", "sim": "tab:blue"}
    for ax, metric in zip(axes[0], metrics, strict=True):
        for k, scenario in enumerate(scenarios):
            for j, source in enumerate(("real", "sim")):
                sel = df[(df["scenario"] == scenario) & (df["metric"] == metric) &
                         (df["source"] == source)]
                v = sel["value"].to_numpy(dtype=float)
                v = v[np.isfinite(v)]
                y = 2 * k + j * 0.8
                if len(v):
                    jitter = np.linspace(-0.2, 0.2, len(v)) if len(v) > 1 else np.zeros(1)
                    ax.scatter(v, y + jitter, s=10, color=colors[source], alpha=0.5,
                               label=source if k == 0 else None)
                    ax.plot([np.median(v)] * 2, [y - 0.35, y + 0.35], color=colors[source],
                            lw=2.5)
        ax.set_yticks([2 * k + 0.4 for k in range(len(scenarios))], scenarios, fontsize=8)
        if metric.endswith("_s") and "_per_" not in metric:
            # Cells span 0.03 s to a minute: a log scale above 0.1 s keeps each readable.
            ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(left=0)
        ax.set_xlabel(metric)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle("hasim lab: real (red) vs simulated (blue), median bars")
    return save_figure(fig, Path(path))
