"""Standard figures from result tables (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hasim.analysis.report import fmt  # noqa: E402


@dataclass(frozen=True)
class Ecdf:
    """The steps of an empirical CDF over ``n`` values: the finite ones sorted (``xs``)
    and the share at or below each (``ys``, over all ``n``: the ``never`` infinite values
    keep the curve below 1)."""

    xs: np.ndarray
    ys: np.ndarray
    n: int
    never: int

    @classmethod
    def of(cls, values: Any) -> Ecdf | None:
        """From values in seconds (NaN left out, inf: never); None when there are none."""
        x = np.asarray(values, dtype=float)
        x = np.sort(x[~np.isnan(x)])
        if len(x) == 0:
            return None
        fin = np.isfinite(x)
        return cls(x[fin], (np.arange(1, len(x) + 1) / len(x))[fin], len(x),
                   int((~fin).sum()))

    @property
    def top(self) -> float:
        """The largest finite value (0 when there is none)."""
        return float(self.xs.max()) if len(self.xs) else 0.0


def failover_ecdf(
    failovers: Mapping[str, pd.DataFrame], path: str | Path, title: str | None = None
) -> Path:
    """ECDF of failover latency per scenario (HA mode), over every (fault, client) pair.

    Clients that never failed count at 0 s; clients that never recovered sit beyond the
    right edge, so a curve that stops below 1 says "this many never got back".
    """
    fig, ax = plt.subplots(figsize=(8, 4.8))
    finite_max = 1.0
    for name, df in failovers.items():
        e = Ecdf.of(df["latency_s"])
        if e is None:
            continue
        finite_max = max(finite_max, e.top)
        label = f"{name} ({e.never}/{e.n} never recovered)" if e.never else name
        ax.step(np.concatenate([[0.0], e.xs]), np.concatenate([[0.0], e.ys]),
                where="post", label=label)
    ax.set_xlim(0, finite_max * 1.05)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("failover latency: fault to the client's first successful request again (s)")
    ax.set_ylabel("fraction of clients")
    ax.set_title(title or "How long are clients cut off after the fault?")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# --- figures of a result directory (``hasim plot``) -------------------------------------------

NODES_KEY = "cluster.generate.nodes"


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` (its folder made if needed) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
    return "-".join(p for p in keep.split("-") if p)[:80] or "x"


def _groups(runs: pd.DataFrame) -> list[tuple[str, str, list[str]]]:
    """(scenario, point, run_ids) in batch order, successful runs only."""
    ok = runs[runs["status"] == "ok"]
    return [(str(s), str(p), list(g["run_id"]))
            for (s, p), g in ok.groupby(["scenario", "point"], sort=False)]


def latency_ecdf_by_mode(results: Any, path: str | Path) -> Path:
    """ECDF of client failover latency per scenario (and sweep point when few), pooled
    over replications."""
    fo = results["failovers"]
    groups = _groups(results.runs)
    per_point = len(groups) <= 10 and len({p for _, p, _ in groups}) > 1
    curves: dict[str, pd.DataFrame] = {}
    for scenario, point, ids in groups:
        label = f"{scenario} [{point}]" if per_point else scenario
        part = fo[fo["run_id"].isin(ids)] if "latency_s" in fo else pd.DataFrame(
            {"latency_s": []})
        curves[label] = pd.concat([curves[label], part]) if label in curves else part
    reps = int(results.runs.groupby(["scenario", "point"]).size().max()) if len(
        results.runs) else 0
    return failover_ecdf(curves, path, title="Which HA mode gets clients back fastest after "
                         f"the fault? ({reps} replication(s) pooled)")


def latency_boxplots(results: Any, path: str | Path) -> Path:
    """Box plots of the failover latency of cut-off clients, one box per sweep point
    (one panel per scenario), with the count that never recovered above each box."""
    fo = results["failovers"]
    groups = _groups(results.runs)
    scenarios = list(dict.fromkeys(s for s, _, _ in groups))
    swept = len({p for _, p, _ in groups}) > 1
    panels = scenarios if swept else ["all scenarios"]
    ncols = min(3, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        boxes, labels, never = [], [], []
        for scenario, point, ids in groups:
            if swept and scenario != panel:
                continue
            lat = (fo.loc[fo["run_id"].isin(ids), "latency_s"].to_numpy(dtype=float)
                   if "latency_s" in fo else np.array([]))
            cut = lat[lat > 0]
            boxes.append(cut[np.isfinite(cut)])
            never.append(int(np.isinf(cut).sum()))
            labels.append(point if swept else scenario)
        ax.boxplot([b if len(b) else [np.nan] for b in boxes], showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
        top = max([float(np.nanmax(b)) for b in boxes if len(b)] + [1.0])
        for i, n in enumerate(never, start=1):
            if n:
                ax.annotate(f"{n} never\nrecovered", (i, top), ha="center", va="bottom",
                            fontsize=7, color="#b00")
        ax.set_ylim(0, top * 1.25)
        ax.set_ylabel("failover latency of cut-off clients (s)")
        ax.set_xlabel("sweep point" if swept else "scenario (HA mode)")
        ax.set_title(panel if swept else "", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("How long are cut-off clients out, per " +
                 ("sweep point?" if swept else "HA mode?"), fontsize=11)
    return save_figure(fig, Path(path))


def check_rate_vs_size(summary: pd.DataFrame, path: str | Path,
                       sweep_keys: list[str] | None = None) -> Path:
    """Health checks and new connections per apiserver per second against the number of
    nodes, mean and 95 % interval over replications, one line per scenario."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    others = [c for c in (sweep_keys or []) if c != NODES_KEY]
    keys = ["scenario", *others]
    for key, group in summary.groupby(keys, sort=False):
        group = group.sort_values(NODES_KEY)
        label = key[0] if len(keys) == 1 else " ".join(str(k) for k in key)
        x = group[NODES_KEY].to_numpy(dtype=float)
        for metric, style, what in (("checks_per_apiserver_s", "-o", "health checks"),
                                    ("connections_per_apiserver_s", "--s", "new connections")):
            y = group[metric].to_numpy(dtype=float)
            if not np.any(y > 0):
                continue
            lo = np.nan_to_num(y - group[f"{metric}_ci_low"].to_numpy(dtype=float))
            hi = np.nan_to_num(group[f"{metric}_ci_high"].to_numpy(dtype=float) - y)
            ax.errorbar(x, y, yerr=[lo, hi], fmt=style, ms=4, capsize=3,
                        label=f"{label}: {what}")
    ax.set_xscale("log")
    if ax.has_data():
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("cluster size (nodes)")
    ax.set_ylabel("per apiserver (1/s)")
    ax.set_title("How does the health-check and reconnection load on each apiserver grow "
                 "with the cluster?", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, Path(path))


def not_ready_timeline(results: Any, run_id: str, path: str | Path,
                       max_hosts: int = 40) -> Path:
    """One run: each node's NotReady intervals, with the faults shaded (start to heal)."""
    runs = results.runs.set_index("run_id")
    run = runs.loc[run_id]
    duration = float(run.get("duration_s", np.nan))
    ns = results["node_status"]
    ns = ns[ns["run_id"] == run_id] if "host" in ns else ns.iloc[0:0]
    st = results["state_changes"]
    faults = (st[(st["run_id"] == run_id) & (st["component"] == "fault")]
              if "component" in st else st.iloc[0:0])
    if not np.isfinite(duration):
        duration = float(max([1.0, *ns.get("not_ready_at", pd.Series([])).tolist()]))
    order = (ns.groupby("host")["duration_s"].sum().sort_values(ascending=False)
             .index.tolist()[:max_hosts]) if len(ns) else []
    order = sorted(order)
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.25 * len(order) + 1.8)))
    for i, host in enumerate(order):
        rows = ns[ns["host"] == host]
        spans = [(a, (b if np.isfinite(b) else duration) - a)
                 for a, b in zip(rows["not_ready_at"], rows["ready_at"], strict=True)]
        ax.broken_barh(spans, (i - 0.35, 0.7), color="#d62728", alpha=0.8)
    starts: dict[str, tuple[float, str]] = {}
    for r in faults.itertuples(index=False):
        target, to, t = str(r.subject), str(getattr(r, "to")), float(r.time)  # noqa: B009
        if to == "healed" and target in starts:
            t0, kind = starts.pop(target)
            ax.axvspan(t0, t, color="#888", alpha=0.15)
        elif to != "healed":
            starts[target] = (t, to)
            ax.axvline(t, color="k", lw=1, ls="--")
            ax.annotate(f"{to} {target}", (t, 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=7)
    for t0, _kind in starts.values():
        ax.axvspan(t0, duration, color="#888", alpha=0.15)
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.set_ylim(-0.8, max(len(order), 1) - 0.2)
    ax.set_xlim(0, duration)
    ax.set_xlabel("simulated time (s); dashed: fault, grey: until healed")
    ax.set_ylabel("node")
    title = (f"When were nodes NotReady? {run['scenario']} [{run['point']}] replication "
             f"{run['replication']} ({len(ns['host'].unique()) if len(ns) else 0} node(s))")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, Path(path))


def plot_results(directory: str | Path, out: str | Path) -> list[Path]:
    """The standard figures of a result directory as PNGs under ``out``."""
    from hasim.batches.results import load_results
    from hasim.batches.summarize import summarize, sweep_columns
    from hasim.errors import HasimError
    from hasim.graph.draw import draw_topology
    from hasim.graph.topology import build_topology
    from hasim.spec.scenario import scenario_from_dict

    results = load_results(directory)
    out = Path(out)
    files = [
        latency_ecdf_by_mode(results, out / "failover-ecdf.png"),
        latency_boxplots(results, out / "failover-boxplots.png"),
    ]
    summary = summarize(results)
    if NODES_KEY in summary.columns and summary[NODES_KEY].nunique() > 1:
        files.append(check_rate_vs_size(summary, out / "check-rate-vs-size.png",
                                        sweep_columns(results.runs)))
    runs = results.runs
    ok = runs[runs["status"] == "ok"]
    if len(ok):
        metric = "not_ready_node_s" if "not_ready_node_s" in ok else None
        pick = ok.loc[ok[metric].idxmax()] if metric and ok[metric].max() > 0 else ok.iloc[0]
        files.append(not_ready_timeline(results, str(pick["run_id"]),
                                        out / "not-ready-timeline.png"))
    for scenario, group in runs.groupby("scenario", sort=False):
        stored = [r for r in group.to_dict("records")
                  if (Path(directory) / "configs" / f"run-{r['run_id']}.json").exists()]
        if not stored:
            continue
        first = stored[0]
        config = results.config(str(first["run_id"]))
        path = first.get("path")
        try:
            sc = scenario_from_dict(config, path if isinstance(path, str) else None)
        except HasimError:
            continue  # e.g. its inventory moved since the run: no drawing, no failure
        files.append(draw_topology(build_topology(sc),
                                   out / f"topology-{_slug(str(scenario))}.png",
                                   title=f"{scenario}: who connects to whom"))
    return files


# --- building blocks for notebooks -------------------------------------------------------------


def ecdf_on(ax: Any, samples: Mapping[str, Any], xmin: float = 0.1,
            colors: Mapping[str, Any] | None = None, styles: Mapping[str, str] | None = None
            ) -> None:
    """ECDF curves of ``samples`` (label -> values in seconds) on a log x axis.

    Values below ``xmin`` (0: never affected) count at the left edge, so a curve starts at
    the share that was not hurt; infinite values (never recovered) are never reached, so
    the curve stops below 1 and the legend says how many. Empty samples are skipped.
    """
    top = xmin * 10
    for label, values in samples.items():
        e = Ecdf.of(np.maximum(np.asarray(values, dtype=float), xmin))
        if e is None:
            continue
        top = max(top, e.top)
        text = f"{label} ({e.never}/{e.n} never back)" if e.never else label
        kw: dict[str, Any] = {}
        if colors and label in colors:
            kw["color"] = colors[label]
        if styles and label in styles:
            kw["linestyle"] = styles[label]
        ax.step(np.concatenate([[xmin], e.xs, [1e12]]),  # 1e12: past any right edge
                np.concatenate([[0.0], e.ys, [e.ys[-1] if len(e.ys) else 0.0]]),
                where="post", label=text, **kw)
    ax.set_xscale("log")
    ax.set_xlim(xmin, top * 1.5)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")


def heatmap_on(ax: Any, grid: pd.DataFrame, cmap: str = "Reds", label: str | None = None,
               shade: pd.DataFrame | None = None, rotation: float = 0, fontsize: float = 8
               ) -> Any:
    """``grid`` (rows x columns, in their order) as an annotated heat map on ``ax``.

    Each cell shows its value (``-`` where there is none) in white on the darker cells.
    The colours follow ``shade`` if given (e.g. a log of the values, so that one huge cell
    does not wash out the rest), else the values, from 0. ``label``: a colour bar with it.
    """
    values = grid.to_numpy(dtype=float)
    colour = values if shade is None else shade.to_numpy(dtype=float)
    finite = colour[np.isfinite(colour)]
    top = float(finite.max()) if len(finite) else 1.0
    im = ax.imshow(colour, cmap=cmap, aspect="auto", vmin=min(0.0, float(finite.min()))
                   if len(finite) else 0.0, vmax=top if top > 0 else 1.0)
    for (r, c), v in np.ndenumerate(values):
        dark = np.isfinite(colour[r, c]) and top > 0 and colour[r, c] > 0.6 * top
        ax.text(c, r, "-" if np.isnan(v) else fmt(v), ha="center", va="center",
                fontsize=fontsize, color="white" if dark else "black")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], rotation=rotation,
                  ha="right" if rotation else "center", fontsize=fontsize)
    ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index], fontsize=fontsize)
    if label is not None:
        ax.figure.colorbar(im, ax=ax, label=label)
    return im
