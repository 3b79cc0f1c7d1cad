"""Headline figures of a batch with 95 % confidence intervals over replications.

For each run, from its tables:

- failover latency of the clients a fault cut off (``latency_s > 0``; clients that never
  failed are not in these figures, and a run where no client was cut off counts 0):
  mean, median, p95 and max of the finite ones, and how many never recovered before the
  end of the run (``never_recovered``, their latency is infinite);
- ``not_ready_node_s``: node-seconds spent NotReady (sum of the NotReady intervals);
- ``checks_per_apiserver_s``: health checks (HAProxy active checks and nginx passive
  re-probes) received per apiserver per second, and ``connections_per_apiserver_s``
  (new proxied connections, each a TLS handshake: kubespray #655);
- ``availability_mean``: the mean over clients of the fraction of time they could reach
  an apiserver.

A run with sampled clients (``sampling.nodes``, :mod:`hasim.sim.sampling`) has a
``weight`` column in those tables: the nodes a row stands for. Its figures are then those
of the full cluster, estimated: counts and sums weighted, means weighted, the median and
p95 the weighted sample's (the inverted CDF: the smallest latency whose weighted share
reaches the quantile, what the plain sample would give with each row repeated ``weight``
times), the max the sample's.

Then, per scenario (HA mode) and sweep point, the mean of each figure over the
replications with a 95 % Student t interval: mean +- t(0.975, n-1) s / sqrt(n), s the
sample standard deviation of the per-replication values. With one replication the
interval is NaN (unknown), never zero. Runs that ended in an error are counted
(``errors``) and left out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hasim.batches.results import SUMMARY_FILE, Results, load_results

#: Per-run figures, with their unit, in the order summary.csv lists them.
METRICS: dict[str, str] = {
    "failover_mean_s": "s",
    "failover_median_s": "s",
    "failover_p95_s": "s",
    "failover_max_s": "s",
    "clients_cut_off": "clients",
    "never_recovered": "clients",
    "not_ready_node_s": "node-s",
    "checks_per_apiserver_s": "1/s",
    "connections_per_apiserver_s": "1/s",
    "availability_mean": "fraction",
}
CHECK_KINDS = ("active", "passive")
CONFIDENCE = 0.95


def _by_run(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    if df.empty or "run_id" not in df.columns:
        return {}
    return {str(k): g for k, g in df.groupby("run_id", sort=False)}


def per_run(results: Results) -> pd.DataFrame:
    """One row per successful run: its keys (scenario, point, sweep values, replication)
    and the figures of :data:`METRICS`."""
    runs = results.runs
    ok = runs[runs["status"] == "ok"]
    fo = _by_run(results["failovers"])
    ns = _by_run(results["node_status"])
    hc = _by_run(results["health_checks"])
    av = _by_run(results["availability"])
    rows = []
    for run in ok.to_dict("records"):
        rid = run["run_id"]
        row = {"run_id": rid, **_failover_figures(fo.get(rid))}
        nsr = ns.get(rid)
        row["not_ready_node_s"] = (float((nsr["duration_s"] * _weights(nsr)).sum())
                                   if nsr is not None else 0.0)
        apis = run.get("apiservers")
        apis = int(apis) if apis is not None and not _nan(apis) and apis > 0 else 1
        hcr = hc.get(rid)
        if hcr is not None and len(hcr):
            rate = hcr["rate_per_s"] * _weights(hcr)
            checks = rate[hcr["kind"].isin(CHECK_KINDS)].sum()
            conns = rate[hcr["kind"] == "connection"].sum()
        else:
            checks = conns = 0.0
        row["checks_per_apiserver_s"] = float(checks) / apis
        row["connections_per_apiserver_s"] = float(conns) / apis
        avr = av.get(rid)
        row["availability_mean"] = (float(np.average(avr["fraction"], weights=_weights(avr)))
                                    if avr is not None and len(avr) else math.nan)
        rows.append(row)
    figures = pd.DataFrame(rows, columns=["run_id", *METRICS])
    return ok.merge(figures, on="run_id", how="left", suffixes=("_summary", ""))


def _nan(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _weights(df: pd.DataFrame) -> pd.Series:
    """The nodes each row stands for: its ``weight`` (sampled clients), else 1."""
    if "weight" in df.columns:
        return df["weight"].astype(float).fillna(1.0)
    return pd.Series(1.0, index=df.index)


def _failover_figures(df: pd.DataFrame | None) -> dict[str, float]:
    if df is None:
        df = pd.DataFrame({"latency_s": []})
    lat = df["latency_s"].to_numpy(dtype=float)
    weighted = "weight" in df.columns
    w = _weights(df).to_numpy(dtype=float)
    cut = lat > 0
    finite = cut & np.isfinite(lat)
    out = {"clients_cut_off": float(w[cut].sum()),
           "never_recovered": float(w[cut & np.isinf(lat)].sum())}
    if not cut.any():
        stats = dict.fromkeys(("mean", "median", "p95", "max"), 0.0)
    elif not finite.any():
        stats = dict.fromkeys(("mean", "median", "p95", "max"), math.nan)
    elif weighted:
        x, wx = lat[finite], w[finite]
        stats = {"mean": float(np.average(x, weights=wx)),
                 "median": float(np.percentile(x, 50, weights=wx, method="inverted_cdf")),
                 "p95": float(np.percentile(x, 95, weights=wx, method="inverted_cdf")),
                 "max": float(x.max())}
    else:
        x = lat[finite]
        stats = {"mean": float(x.mean()), "median": float(np.median(x)),
                 "p95": float(np.percentile(x, 95)), "max": float(x.max())}
    out.update({f"failover_{k}_s": v for k, v in stats.items()})
    return out


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE
            ) -> tuple[float, float, float, int]:
    """Mean of the finite ``values`` and its Student t interval: (mean, low, high, n)."""
    from scipy.stats import t

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(x.mean())
    if n == 1:
        return m, math.nan, math.nan, 1
    half = float(t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n


def sweep_columns(runs: pd.DataFrame) -> list[str]:
    """The columns of ``runs`` that hold sweep values (between ``point`` and
    ``replication``)."""
    cols = list(runs.columns)
    if "point" not in cols or "replication" not in cols:
        return []
    return cols[cols.index("point") + 1 : cols.index("replication")]


def summarize(source: str | os.PathLike[str] | Results) -> pd.DataFrame:
    """One row per (scenario, sweep point): ``reps``, ``errors`` and, for each figure of
    :data:`METRICS`, its mean over replications and ``_ci_low``/``_ci_high`` (95 %)."""
    results = source if isinstance(source, Results) else load_results(source)
    runs = results.runs
    keys = ["scenario", "point"]
    sweeps = sweep_columns(runs)
    figures = per_run(results)
    rows = []
    for (scenario, point), group in runs.groupby(keys, sort=False):
        row: dict[str, object] = {"scenario": scenario, "point": point}
        for col in sweeps:
            row[col] = group[col].iloc[0]
        row["reps"] = int(len(group))
        row["errors"] = int((group["status"] != "ok").sum())
        mine = figures[(figures["scenario"] == scenario) & (figures["point"] == point)]
        for metric in METRICS:
            m, lo, hi, _n = mean_ci(mine[metric].to_numpy(dtype=float))
            row[metric] = m
            row[f"{metric}_ci_low"] = lo
            row[f"{metric}_ci_high"] = hi
        rows.append(row)
    return pd.DataFrame(rows)


def write_summary(directory: str | os.PathLike[str]) -> tuple[Path, pd.DataFrame]:
    """Compute the summary of a result directory and write ``summary.csv`` there."""
    df = summarize(directory)
    path = Path(directory) / SUMMARY_FILE
    from hasim.batches.results import _atomic_write

    _atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    return path, df


_SHOWN = {
    "failover_mean_s": "failover mean s",
    "failover_p95_s": "p95 s",
    "failover_max_s": "max s",
    "never_recovered": "never back",
    "not_ready_node_s": "NotReady node-s",
    "checks_per_apiserver_s": "checks/api/s",
}


def format_summary(df: pd.DataFrame) -> str:
    """The summary as a text table: ``mean ±half-width`` of the main figures."""
    if df.empty:
        return "(no runs)"
    out = pd.DataFrame({"scenario": df["scenario"], "point": df["point"], "reps": df["reps"]})
    if (df["errors"] > 0).any():
        out["errors"] = df["errors"]
    for metric, label in _SHOWN.items():
        out[label] = [_pm(m, lo, hi) for m, lo, hi in
                      zip(df[metric], df[f"{metric}_ci_low"], df[f"{metric}_ci_high"],
                          strict=True)]
    if (out["point"] == "base").all():
        out = out.drop(columns="point")
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.max_colwidth", 40):
        return out.to_string(index=False)


def _pm(m: float, lo: float, hi: float) -> str:
    if math.isnan(m):
        return "-"
    text = _num(m)
    if not math.isnan(lo) and hi > lo:
        text += f" ±{_num((hi - lo) / 2)}"
    return text


def _num(x: float) -> str:
    if math.isinf(x):
        return "inf"
    if x == int(x) and abs(x) < 1e6:
        return f"{x:.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 1:
        return f"{x:.1f}"
    return f"{x:.3g}"
