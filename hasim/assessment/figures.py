"""The figures of an assessment, and the sentence under each: shared by ``report.html``
and notebook 05.

Each figure function takes an :class:`~hasim.assessment.assess.Assessment` and returns a
matplotlib figure, or None when the assessment has nothing to draw (no fault matrix, no
tuning sweep):

- :func:`damage`: client-seconds lost, layout x fault;
- :func:`failover_ecdf`: how fast the worker nodes' clients get through again after the
  master faults, per layout;
- :func:`check_load`: health checks and new connections per apiserver, per layout;
- :func:`tuning_front`: the recommended layout's timer settings, p95 failover against
  check load, with their Pareto front and its knee.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hasim.analysis.compare import NODE_CLASSES  # noqa: E402
from hasim.analysis.plots import Ecdf, heatmap_on  # noqa: E402
from hasim.analysis.report import fmt  # noqa: E402
from hasim.spec.units import parse_duration  # noqa: E402

FIG_W = 10
#: The fault kinds aimed at a master, whose failover :func:`failover_ecdf` draws.
MASTER_FAULTS = ("crash", "poweroff", "partition")
_STYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1))]


def damage(a: Any) -> Any:
    """Mean client-seconds lost per (layout, fault), coloured on a log scale so that one
    catastrophic cell does not wash out the rest."""
    from hasim.assessment.assess import FAULT_AT

    d = a.damage
    if d is None or d.empty:
        return None
    grid = (d.set_index(["layout", "fault"])["client_time_lost_s_mean"].unstack("fault")
            .reindex(index=list(dict.fromkeys(d["layout"])),
                     columns=list(dict.fromkeys(d["fault"]))))
    fig, ax = plt.subplots(figsize=(11, 0.6 * len(grid) + 2))
    heatmap_on(ax, grid, cmap="Reds", shade=np.log10(1 + grid.fillna(0)),
               label="log10(1 + client-seconds lost)", rotation=30)
    ax.set_xlabel(f"fault (held from {FAULT_AT} to the end of the run)")
    ax.set_ylabel("layout")
    ax.set_title("Which fault costs which layout how much client time?")
    fig.tight_layout()
    return fig


def damage_finding(a: Any) -> str:
    """The costliest (layout, fault) cell, and the current layout's costliest fault."""
    d = a.damage
    if d is None or d.empty:
        return "**Finding.** No fault was run: there is no damage to compare."
    worst = d.loc[d["client_time_lost_s_mean"].idxmax()]
    cur = d[d["layout"] == a.current]
    cw = cur.loc[cur["client_time_lost_s_mean"].idxmax()] if len(cur) else worst
    return (f"**Finding.** The costliest cell is **{worst['layout']}** under "
            f"**{worst['fault']}** ({fmt(worst['client_time_lost_s_mean'])} client-seconds "
            f"lost); for the current layout ({a.current}) it is **{cw['fault']}** "
            f"({fmt(cw['client_time_lost_s_mean'])} client-seconds, "
            f"{fmt(cw['never_recovered_mean'])} clients never back, "
            f"{fmt(cw['not_ready_nodes_mean'])} nodes NotReady).")


def _master_victims(a: Any) -> pd.DataFrame:
    if a.cells is None or a.cells.empty:
        return pd.DataFrame()
    v = a.victims()
    if v.empty:
        return v
    return v[v["client_class"].isin(NODE_CLASSES) & v["kind"].isin(list(MASTER_FAULTS))]


def never_back(a: Any) -> pd.Series:
    """Per layout, the share of the worker nodes' clients the master faults left running
    that never got through again within the run."""
    v = _master_victims(a)
    if v.empty:
        return pd.Series(dtype=float)
    out = {}
    for layout, g in v.groupby("layout", sort=False):
        e = Ecdf.of(g["latency_s"])
        out[layout] = e.never / e.n if e else 0.0
    return pd.Series(out, dtype=float)


def failover_ecdf(a: Any) -> Any:
    """The share of the worker nodes' clients working again t seconds after a master
    fault, per layout (never cut off: back at 0; never back: the curve ends below 1)."""
    from hasim.assessment.assess import RUN_DURATION

    v = _master_victims(a)
    if v.empty:
        return None
    fig, ax = plt.subplots(figsize=(FIG_W, 4.2))
    for i, (layout, g) in enumerate(v.groupby("layout", sort=False)):
        # latency 0 (never cut off) counts as back at once
        e = Ecdf.of(g["latency_s"])
        if e is None:
            continue
        # Drawn to the end of the window, so that a layout where no one comes back still
        # shows as a line.
        end = parse_duration(RUN_DURATION) - float(g["fault_at"].iloc[0])
        ax.step(np.concatenate([[0.0], e.xs, [end]]),
                np.concatenate([[0.0], e.ys, [e.ys[-1] if len(e.ys) else 0.0]]), where="post",
                linestyle=_STYLES[i % len(_STYLES)], linewidth=1.8,
                label=f"{layout} ({e.never} of {e.n} never back)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("seconds after the master fault (log scale beyond 1 s)")
    ax.set_ylabel("share of node clients working again")
    ax.set_ylim(0, 1.02)
    ax.set_title("How fast do kubelets and kube-proxies on worker nodes get through again "
                 "after a master crash, power-off or partition?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def failover_finding(a: Any) -> str:
    """The default layout's share of never-back clients, and the layout with the fewest."""
    never = never_back(a)
    if never.empty:
        return "**Finding.** No master fault was run: there is no failover to compare."
    best = never.idxmin()
    default = (f"{fmt(100 * never['default'])} % of the worker-node clients of the default "
               f"layout never came back within the run; " if "default" in never else "")
    return (f"**Finding.** After the master faults, {default}the fewest never-back clients: "
            f"**{best}** ({fmt(100 * never[best])} %).")


def check_load(a: Any) -> Any:
    """Health checks and new connections per apiserver per second, per layout."""
    d = a.damage
    if d is None or d.empty:
        return None
    g = d.groupby("layout", sort=False)[["checks_per_apiserver_s_mean",
                                          "connections_per_apiserver_s_mean"]].mean()
    fig, ax = plt.subplots(figsize=(FIG_W, 3.6))
    x = np.arange(len(g))
    ax.bar(x - 0.2, g["checks_per_apiserver_s_mean"].fillna(0), 0.4, label="health checks")
    ax.bar(x + 0.2, g["connections_per_apiserver_s_mean"].fillna(0), 0.4,
           label="new connections (TLS handshakes)")
    ax.set_xticks(x, list(g.index), rotation=15, ha="right")
    ax.set_xlabel("layout")
    ax.set_ylabel("per apiserver per second")
    ax.set_title("How much health-check and connection load does each layout put on every "
                 "apiserver?")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def tuning_front(a: Any) -> Any:
    """Every timer setting of the recommended layout's sweep, p95 failover against checks
    per apiserver; the unsafe ones crossed out, the Pareto front joined, the knee ringed."""
    t = a.tuning
    if t is None or t.empty:
        return None
    fig, ax = plt.subplots(figsize=(FIG_W, 4.2))
    safe, unsafe = t[t["safe"]], t[~t["safe"]]
    ax.scatter(unsafe["p95_failover_s"], unsafe["checks_per_apiserver_s"], marker="x",
               color="#c44", label="more nodes NotReady or clients never back")
    ax.scatter(safe["p95_failover_s"], safe["checks_per_apiserver_s"], color="#888",
               label="other settings")
    front = t[t["front"]].sort_values("p95_failover_s")
    ax.plot(front["p95_failover_s"], front["checks_per_apiserver_s"], "o-", color="#1f77b4",
            label="Pareto front")
    k = t[t["knee"]]
    ax.scatter(k["p95_failover_s"], k["checks_per_apiserver_s"], s=160, facecolors="none",
               edgecolors="#2a2", linewidths=2, label=f"knee: {k['label'].iloc[0]}")
    ax.set_xlabel("p95 failover of the cut-off clients (s), mean of a crash and a power-off")
    ax.set_ylabel("health checks per apiserver per second")
    ax.set_title(f"Which timers of {a.recommendation['layout']} trade failover latency "
                 "against check load best?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def recommendation_finding(a: Any) -> str:
    """The recommended layout, why, its tuned setting and where its vars go."""
    rec = a.recommendation
    return (f"**Finding.** Recommended: **{rec['layout']}**: {rec['why']}. Tuned setting: "
            f"{(rec.get('tuning') or {}).get('setting', 'not tuned')}. Paste "
            f"`{a.out / 'recommended-vars.yml'}` into `{rec['file']}`; the full report is "
            f"`{a.out / 'report.html'}`.")
