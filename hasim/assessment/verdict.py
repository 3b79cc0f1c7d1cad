"""From an assessment's runs to a verdict: what each fault cost each layout, their ranking
and the layout to recommend (docs/assess.md, "How the verdict is reached").

Per run (one layout, one fault, one replication), over the clients the fault left running:

- ``not_ready_nodes``: nodes that went NotReady although the fault left them running;
- ``client_time_lost_s``: client-seconds without a working apiserver, summed over those
  clients, from the fault to the end of the run;
- ``p95_failover_s``: the 95th percentile of the failover latency (fault to the first
  good request again) of the clients it cut off; a client that never came back counts
  with the whole window after the fault, so the figure is a lower bound, never a
  flattering mean of the survivors;
- ``never_recovered``: clients still cut off at the end;
- ``checks_per_apiserver_s`` and ``connections_per_apiserver_s``: health checks (active
  and passive) and new proxied connections each apiserver receives per second.

Counts are weighted where clients were sampled. Each figure is then a mean over the
replications with a 95 % Student t interval (common random numbers: replication r of
every layout sees the same random numbers).

Ranking: damage first, load second. Per replication, a layout's damage is summed over the
faults every layout faced; two layouts are compared on never-recovered clients, then
NotReady nodes, then client time lost, then checks per apiserver; at the first figure
whose intervals do not overlap the lower one wins, and if every interval overlaps they
tie. The recommendation is the best-ranked layout without a single point of failure when
one exists; among tied layouts, the one needing no extra hosts, then the lighter one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cmp_to_key
from typing import Any

import numpy as np
import pandas as pd

from hasim.analysis.compare import _fault_hosts, victims
from hasim.batches.summarize import _weights, mean_ci, per_run

#: The damage figures, in the order the ranking compares them, then the load figure.
DAMAGE = ("never_recovered", "not_ready_nodes", "client_time_lost_s")
LOAD = "checks_per_apiserver_s"
#: Every per-run figure of an assessment.
FIGURES = (*DAMAGE, "p95_failover_s", LOAD, "connections_per_apiserver_s")


def _w(df: pd.DataFrame) -> np.ndarray:
    return _weights(df).to_numpy(dtype=float)


def _p95_censored(lat: np.ndarray, w: np.ndarray, window: float) -> float:
    if not len(lat):
        return 0.0
    x = np.where(np.isfinite(lat), lat, window)
    if np.allclose(w, 1.0):
        return float(np.percentile(x, 95))
    return float(np.percentile(x, 95, weights=w, method="inverted_cdf"))


def run_figures(results: Any, cells: pd.DataFrame) -> pd.DataFrame:
    """One row per successful run: its cell's columns (``layout``, ``fault``, ...), its
    ``replication`` and the :data:`FIGURES`."""
    runs = results.runs
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=["run_id", "scenario", "replication", *FIGURES])
    vic = victims(results)
    ns = results["node_status"]
    down = _fault_hosts(results["state_changes"])
    load = per_run(results).set_index("run_id")
    # The fault's own target going NotReady (a partitioned master, say) is the fault
    # itself, not damage it did to others.
    targets = {str(sc): str(t).split("/")[0] for sc, t in zip(cells["scenario"], cells["target"],
                                                             strict=True)}
    rows = []
    for run in ok.itertuples(index=False):
        rid = str(run.run_id)
        mine = vic[vic["run_id"] == rid] if len(vic) else vic
        w = _w(mine)
        lat = mine["latency_s"].to_numpy(dtype=float) if len(mine) else np.array([])
        cut = lat > 0
        fault_at = float(mine["fault_at"].iloc[0]) if len(mine) else math.nan
        window = float(run.duration_s) - fault_at if len(mine) else math.nan
        unavailable = mine["unavailable_s"].clip(lower=0).to_numpy(dtype=float) \
            if len(mine) else np.array([])
        spared = down.get(rid, set()) | {targets.get(str(run.scenario), "")}
        nsr = ns[(ns["run_id"] == rid) & ~ns["host"].isin(spared)] \
            if "host" in ns else ns.iloc[0:0]
        rows.append({
            "run_id": rid, "scenario": run.scenario, "replication": int(run.replication),
            "never_recovered": float(w[cut & np.isinf(lat)].sum()),
            "not_ready_nodes": float(_w(nsr.drop_duplicates("host")).sum()) if len(nsr) else 0.0,
            "client_time_lost_s": float((np.nan_to_num(unavailable) * w).sum()),
            "p95_failover_s": _p95_censored(lat[cut], w[cut], window),
            LOAD: float(load.at[rid, LOAD]) if rid in load.index else math.nan,
            "connections_per_apiserver_s": float(load.at[rid, "connections_per_apiserver_s"])
            if rid in load.index else math.nan,
        })
    return pd.DataFrame(rows).merge(cells, on="scenario", how="left")


def _interval(values: Sequence[float]) -> dict[str, Any]:
    m, lo, hi, _ = mean_ci(values)
    if len(values) and not math.isnan(m) and math.isnan(lo):
        lo = hi = m  # one replication: the value itself (the report says n = 1)
    return {"mean": _num(m), "ci": [_num(lo), _num(hi)]}


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def cell_table(figures: pd.DataFrame) -> pd.DataFrame:
    """Per (layout, fault): each figure's mean and 95 % interval (columns ``FIG`` with a
    ``{"mean", "ci"}`` dict, plus ``FIG_mean``/``FIG_lo``/``FIG_hi`` for plotting)."""
    rows = []
    for (layout, fault), g in figures.groupby(["layout", "fault"], sort=False):
        row: dict[str, Any] = {"layout": layout, "fault": fault,
                               "kind": g["kind"].iloc[0], "target": g["target"].iloc[0],
                               "replications": len(g)}
        for f in FIGURES:
            iv = _interval(g[f].to_list())
            row[f] = iv
            row[f"{f}_mean"], (row[f"{f}_lo"], row[f"{f}_hi"]) = iv["mean"], iv["ci"]
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Standing:
    """A layout's totals over the common faults: per figure ``(mean, lo, hi)``."""

    layout: str
    totals: dict[str, tuple[float, float, float]]
    spofs: list[str]
    extra_hosts: int


def standings(figures: pd.DataFrame, spofs: Mapping[str, list[str]],
              extra_hosts: Mapping[str, int]) -> list[Standing]:
    """Each layout's damage summed over the faults it faced (per replication), and its
    mean load, with intervals. Every layout faces the same master and etcd faults; a
    layout with a load balancer also faces its loss, which a layout without one cannot
    suffer (it counts no damage there)."""
    out = []
    for layout, g in figures.groupby("layout", sort=False):
        per_rep = g.groupby("replication")[list(DAMAGE)].sum()
        totals = {}
        for f in DAMAGE:
            m, lo, hi, _ = mean_ci(per_rep[f].to_numpy(dtype=float))
            totals[f] = (m, m if math.isnan(lo) else lo, m if math.isnan(hi) else hi)
        m, lo, hi, _ = mean_ci(g.groupby("replication")[LOAD].mean().to_numpy(dtype=float))
        totals[LOAD] = (m, m if math.isnan(lo) else lo, m if math.isnan(hi) else hi)
        out.append(Standing(str(layout), totals, list(spofs.get(str(layout), [])),
                            int(extra_hosts.get(str(layout), 0))))
    return out


def compare(a: Standing, b: Standing) -> tuple[int, str | None]:
    """-1 if ``a`` is better, 1 if ``b`` is, 0 for a tie; and the figure that decided."""
    for f in (*DAMAGE, LOAD):
        (ma, la, ha), (mb, lb, hb) = a.totals[f], b.totals[f]
        if any(math.isnan(v) for v in (ma, mb)):
            continue
        # Intervals apart (or exact values that differ, with one replication).
        if ha < lb or (ha == la and hb == lb and ma < mb):
            return -1, f
        if hb < la or (ha == la and hb == lb and mb < ma):
            return 1, f
    return 0, None


def rank(items: Sequence[Standing]) -> list[tuple[int, Standing]]:
    """``(rank, standing)`` best first; a layout that ties with the one ranked above it
    shares its rank."""
    def key(s: Standing) -> tuple[float, ...]:
        return tuple(s.totals[f][0] for f in (*DAMAGE, LOAD))

    # By means first (a total order), then by the interval comparison, so that a layout
    # whose damage ties but whose load is lower moves up.
    def cmp(a: Standing, b: Standing) -> int:
        return compare(a, b)[0]

    ordered = sorted(sorted(items, key=key), key=cmp_to_key(cmp))
    out: list[tuple[int, Standing]] = []
    for i, s in enumerate(ordered):
        if out and compare(out[-1][1], s)[0] == 0:
            out.append((out[-1][0], s))
        else:
            out.append((i + 1, s))
    return out


def _g(x: float) -> str:
    return f"{x:.3g}"


def recommend(ranked: Sequence[tuple[int, Standing]]) -> tuple[Standing, list[Standing], str]:
    """The layout to recommend, the layouts it ties with, and why."""
    without = [(r, s) for r, s in ranked if not s.spofs]
    pool = without or list(ranked)
    best_rank = pool[0][0]
    tied = [s for r, s in pool if r == best_rank]
    choice = sorted(tied, key=lambda s: (s.extra_hosts, s.totals[LOAD][0]))[0]
    others = [s for s in tied if s is not choice]
    why = []
    rest = [s for _, s in ranked if s is not choice and s not in others]
    if rest:
        runner = rest[0]
        _, fig = compare(choice, runner)
        if fig is not None:
            words = {"never_recovered": "clients never back", "not_ready_nodes":
                     "NotReady nodes", "client_time_lost_s": "client-seconds lost",
                     LOAD: "checks per apiserver per second"}[fig]
            why.append(f"it does better than the next layout, {runner.layout}, on {words} "
                       f"({_g(choice.totals[fig][0])} against {_g(runner.totals[fig][0])}, "
                       "summed over the faults, intervals apart)")
    if without and len(without) < len(ranked):
        spof = [s.layout for _, s in ranked if s.spofs]
        verb = "keeps" if len(spof) == 1 else "keep"
        why.append(f"{', '.join(spof)} {verb} a single point of failure; {choice.layout} has none")
    if others:
        why.append(f"it ties with {', '.join(s.layout for s in others)} (their 95 % intervals "
                   f"overlap on every damage and load figure); hasim picks {choice.layout} "
                   "because it needs the fewest extra hosts and the least check load")
    return choice, others, "; ".join(why)
