"""The HA-mode comparison of notebook 01 as figures and findings.

:mod:`hasim.analysis.compare` computes the tables of a fault matrix (``victims``,
``impact``, ``rank_modes``); this module draws them and writes the sentence under each
figure from the same numbers:

- :func:`failover_figure` / :func:`failover_finding`: how long the worker nodes' clients
  are cut off, per client class and fault group, one ECDF per mode;
- :func:`crash_vs_poweroff`: behind a load balancer, a master's crash against its power-off;
- :func:`damage_figure` / :func:`damage_finding`: the nodes NotReady and requests failed,
  per mode and fault;
- :func:`ranking_finding`: the modes' ranking in one sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hasim.analysis.compare import CLASS_LABELS, NODE_CLASSES, latency_by_class  # noqa: E402
from hasim.analysis.plots import ecdf_on, heatmap_on  # noqa: E402
from hasim.analysis.report import fmt  # noqa: E402

#: The fault groups of the matrix, in the order they are drawn.
GROUPS = ("master crash", "master power-off", "LB crash", "LB power-off")


def groups_of(cells: pd.DataFrame) -> list[str]:
    """The fault groups the matrix has, in :data:`GROUPS`' order."""
    return [g for g in GROUPS if g in set(cells["group"])]


def colors(modes: Sequence[str]) -> dict[str, Any]:
    """One colour per mode (matplotlib's tab10 cycle), the same in every figure."""
    return {m: f"C{i % 10}" for i, m in enumerate(modes)}


def failover_figure(vic: pd.DataFrame, modes: Sequence[str], groups: Sequence[str],
                    reps: int) -> Any:
    """A grid of ECDFs: a row per worker client class, a column per fault group, a curve
    per mode of the failover latency (never cut off at the left edge)."""
    fig, axes = plt.subplots(len(NODE_CLASSES), len(groups), figsize=(4.3 * len(groups), 7.5),
                             sharey=True, squeeze=False)
    finite = vic.loc[np.isfinite(vic["latency_s"]), "latency_s"]
    right = max(float(finite.max()) if len(finite) else 1.0, 1.0) * 1.5
    cmap = colors(modes)
    for i, cls in enumerate(NODE_CLASSES):
        for j, group in enumerate(groups):
            ax = axes[i][j]
            sel = vic[(vic["client_class"] == cls) & (vic["group"] == group)]
            ecdf_on(ax, {m: sel.loc[sel["mode"] == m, "latency_s"] for m in modes},
                    colors=cmap)
            ax.set_xlim(0.1, right)
            ax.set_title(f"{group}: {CLASS_LABELS[cls]}", fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6.5, loc="lower right")
            if j == 0:
                ax.set_ylabel("share of clients back by then")
            ax.set_xlabel("time from the fault to the first\nsuccessful request again (s, log)",
                          fontsize=8)
    fig.suptitle(f"How long are worker clients cut off when a master or the LB fails? "
                 f"({len(modes)} HA modes, {reps} replication(s), clients never cut off at "
                 f"the left edge)", fontsize=11)
    fig.tight_layout()
    return fig


def failover_finding(vic: pd.DataFrame, groups: Sequence[str]) -> str:
    """Per fault group: the fastest and slowest mode by the p95 of the worker clients
    they cut off (among modes that got every one back), the modes that cut none off, and
    the modes where some never got back, after which faults."""
    node = vic[vic["client_class"].isin(NODE_CLASSES)]
    lat = latency_by_class(node, by=("group", "mode"))
    pooled = lat.groupby(["group", "mode"], sort=False)[["clients", "cut_off", "never"]].sum()
    p95 = lat.groupby(["group", "mode"], sort=False)["p95_s"].max()
    lines = []
    for group in groups:
        g, p = pooled.loc[group], p95.loc[group]
        fine = p[(g["never"] == 0) & p.notna()]
        parts = []
        if len(fine) > 1:
            parts.append(f"the fastest mode is **{fine.idxmin()}** (p95 {fmt(fine.min(), 's')} "
                         f"of the worker clients it cut off), the slowest **{fine.idxmax()}** "
                         f"({fmt(fine.max(), 's')})")
        elif len(fine) == 1:
            parts.append(f"only **{fine.index[0]}** got every worker client back (p95 "
                         f"{fmt(fine.iloc[0], 's')})")
        untouched = g[g["cut_off"] == 0].index.tolist()
        if untouched:
            parts.append("no worker client was cut off in " + ", ".join(untouched))
        for mode, r in g[g["never"] > 0].iterrows():
            sel = node[(node["mode"] == mode) & (node["group"] == group)
                       & np.isinf(node["latency_s"])]
            parts.append(f"in **{mode}** {int(r['never'])} of {int(r['clients'])} worker "
                         f"clients never got back (after {', '.join(dict.fromkeys(sel['fault']))})")
        lines.append(f"- **{group}**: " + "; ".join(parts) + ".")
    return ("**Finding.** Per kind of fault, over every master (or the LB) and replication:\n"
            + "\n".join(lines))


def crash_vs_poweroff(vic: pd.DataFrame, lb_modes: Sequence[str], clients: Any) -> str:
    """Behind a load balancer (``lb_modes``), the worker clients a master's crash and a
    master's power-off cut off: the crash's are back at once through the LB, the
    power-off's wait for their own timer (``clients``: the scenario's client settings,
    whose HTTP/2 health check the sentence quotes)."""
    cut = vic[vic["client_class"].isin(NODE_CLASSES) & vic["cut_off"]
              & vic["mode"].isin(list(lb_modes)) & (vic["target_role"] == "master")]
    crash = cut.loc[cut["fault_kind"] == "crash", "latency_s"]
    po = cut.loc[cut["fault_kind"] == "poweroff", "latency_s"]
    po = po[np.isfinite(po)]
    return (
        f"Behind a load balancer, a master's **crash** costs little: its kernel resets the "
        f"connections and the clients redial through the LB (median of the cut-off worker "
        f"clients {fmt(crash.median(), 's')}, {fmt(100 * (crash <= 10).mean())} % within "
        f"10 s). A **power-off** costs more: nothing tells the client, which waits for its "
        f"own timer, here client-go's HTTP/2 health check (read idle "
        f"{fmt(clients.http2_read_idle_timeout, 's')} + ping "
        f"{fmt(clients.http2_ping_timeout, 's')} after the connection's last read); the "
        f"median cut-off worker client is back after {fmt(po.median(), 's')}, the slowest "
        f"after {fmt(po.max(), 's')}.")


def damage(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per (mode, fault): the mean over replications of the running nodes NotReady and
    of the requests failed after the fault."""
    return per_run.groupby(["mode", "fault"], sort=False)[
        ["not_ready_nodes", "lost_requests"]].mean()


def damage_figure(means: pd.DataFrame, modes: Sequence[str], faults: Sequence[str],
                  nodes: int) -> Any:
    """Two heat maps, mode x fault: nodes NotReady (of ``nodes``) and requests failed."""
    fig, axes = plt.subplots(1, 2, figsize=(15, 0.45 * len(modes) + 2.6))
    for ax, (metric, title, unit) in zip(axes, [
            ("not_ready_nodes", f"nodes NotReady although running (of {nodes})", "nodes"),
            ("lost_requests", "requests that failed after the fault", "requests")],
            strict=True):
        grid = means[metric].unstack("fault").reindex(index=list(modes), columns=list(faults))
        heatmap_on(ax, grid, cmap="Reds", label=f"{unit} per run", rotation=40, fontsize=7)
        ax.set_xlabel("fault (held to the end of the run)")
        ax.set_ylabel("HA mode")
        ax.set_title(f"{title} (mean per run)", fontsize=10)
    fig.suptitle("Which faults take nodes NotReady and fail requests, per HA mode? "
                 "('-': that mode has no such fault)", fontsize=11)
    fig.tight_layout()
    return fig


def damage_finding(means: pd.DataFrame, modes: Sequence[str], nodes: int,
                   top: int = 4) -> str:
    """The ``top`` (mode, fault) cells that took the most running nodes NotReady, and
    the modes where no fault took any."""
    worst = means.sort_values(["not_ready_nodes", "lost_requests"], ascending=False)
    harmful = worst[worst["not_ready_nodes"] > 0]
    clean = [m for m in modes if means.loc[m, "not_ready_nodes"].max() == 0]
    items = [f"**{m}** under *{f}* ({fmt(r['not_ready_nodes'])} of {nodes} nodes, "
             f"{fmt(r['lost_requests'])} requests lost)"
             for (m, f), r in harmful.head(top).iterrows()]
    head = ("The faults that took the most running nodes NotReady: " + "; ".join(items) + ". "
            if items else "No fault took a running node NotReady. ")
    return ("**Finding.** " + head
            + (f"Modes where no fault took a running node NotReady: {', '.join(clean)}."
               if clean else "Every mode lost a running node to some fault."))


def ranking_finding(ranked: pd.DataFrame, faults: int, reps: int) -> str:
    """:func:`~hasim.analysis.compare.rank_modes`' table in one sentence: the best and
    the worst mode, and the modes with a single point of failure."""
    best, worst = ranked.iloc[0], ranked.iloc[-1]
    spof = [f"{r['mode']} ({fmt(r['never recovered (%)'])} % of clients, worst: "
            f"*{r['worst fault']}*)" for _, r in ranked.iterrows()
            if r["never recovered (%)"] > 0]
    return (
        f"**Finding.** Over {faults} faults and {reps} replication(s), **{best['mode']}** "
        f"loses the least client time after a fault ({fmt(best['client time lost (%)'])} %; "
        f"its worst fault is *{best['worst fault']}*), and **{worst['mode']}** the most "
        f"({fmt(worst['client time lost (%)'])} %, worst: *{worst['worst fault']}*). "
        f"Modes with a single point of failure (a client that never got back): "
        + (", ".join(spof) if spof else "none") + ".")
