"""What health checks and reconnections cost the apiservers: the study of notebook 02.

The 2016 HA doc says a load balancer on every node "creates extra health checks on the
Kubernetes apiserver". :func:`study` builds the batch that measures it in a healthy
cluster: the checks and new connections per apiserver per second against the cluster size
(local HAProxy, local nginx, one external HAProxy), against HAProxy's ``inter``, and the
reconnection churn of nginx's ``proxy_timeout`` (kubespray #655). Each pair of runs that
differ only in ``duration`` gives a steady rate (:func:`hasim.analysis.overhead.steady_rates`).

Where that load becomes too much is a :class:`Budget`: the share of one core the TLS
handshakes of checks and new connections may take, priced by
:func:`hasim.analysis.overhead.tls_handshake_cost`. The tables (:func:`by_size`,
:func:`by_interval`, :func:`churn`) feed one figure and one finding each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hasim.analysis.overhead import expected_check_rate  # noqa: E402
from hasim.analysis.report import fmt, fmt_range  # noqa: E402
from hasim.spec.scenario import Scenario  # noqa: E402
from hasim.spec.units import parse_duration  # noqa: E402

NODES = "cluster.generate.nodes"
LOCAL_HAPROXY = "local HAProxy (kubespray today)"
LOCAL_NGINX = "local nginx (2016 doc)"
EXTERNAL = "external HAProxy (2020 fix)"
INTER_LOCAL = "local HAProxy (every node)"
INTER_EXTERNAL = "external HAProxy (one instance)"
#: A log axis has no 0: a series that is 0 everywhere is drawn at this floor, and says so.
FLOOR = 1e-3


@dataclass(frozen=True)
class Budget:
    """``share`` of one core for TLS handshakes, at ``handshake_s`` CPU seconds for a full
    handshake and ``resumed_s`` for a resumed one (no signature)."""

    share: float
    handshake_s: float
    resumed_s: float

    @classmethod
    def of(cls, share: float, cost: Mapping[str, float]) -> Budget:
        """From :func:`~hasim.analysis.overhead.tls_handshake_cost`'s measurement."""
        return cls(share, cost["handshake_s"], cost["ecdhe_s"])

    @property
    def full_per_s(self) -> float:
        """Full handshakes per second that take ``share`` of a core."""
        return self.share / self.handshake_s

    @property
    def resumed_per_s(self) -> float:
        return self.share / self.resumed_s

    def lines(self) -> list[tuple[float, str, str]]:
        """(rate, what, line style) of the two limits, for a figure."""
        return [(self.full_per_s, "full TLS handshakes", "-"),
                (self.resumed_per_s, "resumed TLS handshakes", ":")]


@dataclass(frozen=True)
class Study:
    """The scenarios of the study, by the question they answer."""

    by_size: dict[str, Scenario]  # label -> a scenario sweeping the node count
    by_interval: dict[str, Scenario]  # label -> a scenario sweeping ``inter``
    churn: Scenario  # sweeping nginx's proxy_timeout and the node count
    interval_nodes: int

    @property
    def scenarios(self) -> list[Scenario]:
        return [*self.by_size.values(), self.churn, *self.by_interval.values()]


def study(local: Scenario, external: Scenario, churn_base: Scenario, *, sizes: Sequence[int],
          other_sizes: Sequence[int], churn_sizes: Sequence[int], intervals: Sequence[float],
          interval_nodes: int, warmup: float, window: float) -> Study:
    """The batch: ``local`` (a local-LB scenario) as HAProxy over ``sizes`` and as nginx
    over ``other_sizes``, ``external`` (one external HAProxy) over ``other_sizes``,
    ``churn_base`` with its own ``proxy_timeout`` sweep over ``churn_sizes`` and no fault,
    and both HAProxies over ``intervals`` at ``interval_nodes``.

    Each runs twice, ``warmup`` and ``warmup + window`` seconds long; the interval sweep
    warms up for two of the largest intervals and measures over the least common multiple
    of the intervals (whole seconds), so that each HAProxy sends a whole number of rounds
    in it; intervals that are not whole seconds get the largest interval instead.
    """
    span = [f"{warmup:g}s", f"{warmup + window:g}s"]
    i_warm = 2 * max(intervals)
    whole = all(float(i).is_integer() for i in intervals)
    i_window = math.lcm(*(int(i) for i in intervals)) if whole else max(intervals)
    i_span = [f"{i_warm:g}s", f"{i_warm + i_window:g}s"]
    sized = {
        LOCAL_HAPROXY: local.with_overrides({
            "name": f"{local.name}-haproxy", "balancers.local.kind": "haproxy",
            "sweep": {NODES: list(sizes), "duration": span}}),
        LOCAL_NGINX: local.with_overrides({
            "name": f"{local.name}-nginx", "balancers.local.kind": "nginx",
            "sweep": {NODES: list(other_sizes), "duration": span}}),
        EXTERNAL: external.with_overrides({"sweep": {NODES: list(other_sizes), "duration": span}}),
    }
    churned = churn_base.with_overrides({"faults": [], "sweep": {
        "balancers.local.proxy_timeout": churn_base.spec.sweep["balancers.local.proxy_timeout"],
        NODES: list(churn_sizes), "duration": span}})
    timed = {
        INTER_LOCAL: local.with_overrides({
            "name": f"{local.name}-inter", NODES: interval_nodes,
            "balancers.local.kind": "haproxy",
            # fastinter and downinter follow inter, as HAProxy's do when unset
            "balancers.local.fastinter": None, "balancers.local.downinter": None,
            "sweep": {"balancers.local.inter": list(intervals), "duration": i_span}}),
        INTER_EXTERNAL: external.with_overrides({
            "name": f"{external.name}-inter", NODES: interval_nodes,
            "sweep": {"balancers.external.inter": list(intervals), "duration": i_span}}),
    }
    return Study(sized, timed, churned, interval_nodes)


def _in_order(t: pd.DataFrame, order: Sequence[str], by: str, key: str = "lb"
              ) -> pd.DataFrame:
    """``t`` with its ``key`` groups in ``order`` (the study's), each sorted by ``by``."""
    rank = {k: i for i, k in enumerate(order)}
    return t.sort_values([key, by], key=lambda c: c.map(rank) if c.name == key else c,
                         ignore_index=True)


def _of(rates: pd.DataFrame, scenarios: Mapping[str, Scenario]) -> pd.DataFrame:
    names = {s.name: label for label, s in scenarios.items()}
    mine = rates[rates["scenario"].isin(list(names))].copy()
    mine["lb"] = mine["scenario"].map(names)
    return mine


def by_size(rates: pd.DataFrame, s: Study) -> pd.DataFrame:
    """Per LB and node count, the mean over replications of the steady rates, and the
    closed form (docs/model.md, closed forms) of that configuration.

    Columns: ``lb``, ``nodes``, ``apiservers``, ``checkers``, ``checks_per_apiserver_s``,
    ``connections_per_apiserver_s``, ``closed_form_s``, ``checks_per_node_s``; the LBs
    in the study's order, each by node count.
    """
    mine = _of(rates, s.by_size)
    mine["nodes"] = mine[NODES].astype(int)
    t = (mine.groupby(["lb", "nodes"])[
        ["apiservers", "checkers", "checks_per_apiserver_s", "connections_per_apiserver_s"]]
        .mean().reset_index())
    t = _in_order(t, list(s.by_size), "nodes")
    t["closed_form_s"] = [
        expected_check_rate(s.by_size[lb].with_overrides({NODES: int(n), "sweep": {}}))
        for lb, n in zip(t["lb"], t["nodes"], strict=True)]
    t["checks_per_node_s"] = t["checks_per_apiserver_s"] / t["nodes"]
    return t


def size_figure(t: pd.DataFrame, budget: Budget) -> Any:
    """Checks (simulated and closed form) and new connections per apiserver against the
    node count, log-log, with the budget's two limits."""
    fig, ax = plt.subplots(figsize=(9, 5.5))
    sizes = sorted(set(t["nodes"]))
    zeros = []
    for (lb, g), color in zip(t.groupby("lb", sort=False), ["C0", "C1", "C2"], strict=False):
        y = g["checks_per_apiserver_s"].to_numpy()
        ax.plot(g["nodes"], np.maximum(y, FLOOR), "o", color=color, ms=7,
                label=f"{lb}: checks (simulated)")
        ax.plot(g["nodes"], np.maximum(g["closed_form_s"], FLOOR), "--", color=color, lw=1,
                label=f"{lb}: closed form")
        short = lb.split(" (")[0]
        if not (y > 0).any():
            zeros.append(f"{short}'s checks")
        c = g["connections_per_apiserver_s"].to_numpy()
        if (c > 0).any():
            ax.plot(g["nodes"], c, "x", color=color, ms=7, label=f"{lb}: new connections")
        else:
            zeros.append(f"{short}'s new connections")
    if zeros:
        ax.annotate("drawn at the floor, 0 at every size:\n" + "; ".join(zeros),
                    (sizes[0], FLOOR * 1.3), fontsize=7.5, va="bottom")
    _limits(ax, budget, sizes[0], rates=True)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 2, max(budget.resumed_per_s, t["checks_per_apiserver_s"].max()) * 3)
    ax.set_xlabel("worker nodes")
    ax.set_ylabel("per apiserver, per second (log)")
    apis = ", ".join(f"{a:g}" for a in dict.fromkeys(t["apiservers"]))
    ax.set_title("How many health checks and new connections reach each apiserver as the "
                 f"cluster grows?\n(steady state of a healthy cluster, {apis} apiservers)",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return fig


def _limits(ax: Any, budget: Budget, x: float, rates: bool) -> None:
    for lim, text, ls in budget.lines():
        ax.axhline(lim, color="k", ls=ls, lw=1)
        ax.annotate(f"{fmt(100 * budget.share)} % of a core in {text}"
                    + (f" ({fmt(lim)}/s)" if rates else ""), (x, lim), va="bottom", fontsize=8)


def size_finding(t: pd.DataFrame, budget: Budget) -> str:
    """The finding under :func:`size_figure`: the local HAProxies' load at the largest
    size and per node, against one external HAProxy and nginx; the simulator against the
    closed form; the size at which the checks take the budget; the churn."""
    hap = t[t["lb"] == LOCAL_HAPROXY]
    ngx = t.loc[t["lb"] == LOCAL_NGINX, "checks_per_apiserver_s"]
    ext = t[t["lb"] == EXTERNAL]
    ext_rate = ext["checks_per_apiserver_s"]
    big = int(hap["nodes"].max())
    at_big = float(hap.loc[hap["nodes"] == big, "checks_per_apiserver_s"].iloc[0])
    per_node = float(hap["checks_per_node_s"].mean())
    known = t[t["closed_form_s"] > 0]
    gap = float(((known["checks_per_apiserver_s"] - known["closed_form_s"]).abs()
                 / known["closed_form_s"]).max())
    churn_max = float(t["connections_per_apiserver_s"].max())
    nginx = ("but **not for the nginx it describes, which sends no health checks at all**"
             if ngx.max() == 0 else f"and for nginx ({fmt(ngx.max())} per second)")
    return (
        f"**Finding.** At {fmt(big)} nodes each apiserver receives {fmt(at_big)} checks per "
        f"second from the local HAProxies ({fmt(per_node, digits=3)} per second per node: the "
        f"load grows with the cluster). One external HAProxy sends "
        f"{fmt_range(ext_rate.min(), ext_rate.max())} per apiserver at every simulated size "
        f"({fmt(ext['nodes'].min())} to {fmt(ext['nodes'].max())} nodes), nginx "
        f"{fmt(ngx.max())}. The doc's claim holds for a local HAProxy "
        f"({fmt(at_big / ext['checks_per_apiserver_s'].mean())} times the external LB's checks "
        f"at {fmt(big)} nodes) {nginx}. The simulated rates are within "
        f"{fmt(100 * gap)} % of the closed form (docs/model.md). The local HAProxies' checks "
        f"take {fmt(100 * budget.share)} % of a core of each apiserver from about "
        f"{fmt(budget.full_per_s / per_node)} nodes if every check is a full TLS handshake, or "
        f"{fmt(budget.resumed_per_s / per_node)} nodes if they all resume their TLS sessions. "
        + ("In a healthy cluster no LB opened any new connection to an apiserver in the "
           "window: " if churn_max == 0 else
           f"In a healthy cluster the churn stays at or below {fmt(churn_max)} new "
           f"connections per apiserver per second: ")
        + "kubelets and kube-proxies keep their connections.")


def by_interval(rates: pd.DataFrame, s: Study) -> pd.DataFrame:
    """Per HAProxy (local on every node, or one external) and ``inter``: the mean checks
    per apiserver per second at ``s.interval_nodes`` nodes, and per node.

    Columns: ``lb``, ``inter_s``, ``nodes``, ``checks_per_apiserver_s``,
    ``checks_per_node_s``.
    """
    mine = _of(rates, s.by_interval)
    inter = pd.Series(np.nan, index=mine.index)
    for key in ("balancers.local.inter", "balancers.external.inter"):
        if key in mine:
            inter = inter.fillna(mine[key])
    mine["inter_s"] = inter.astype(float)
    t = mine.groupby(["lb", "inter_s"])["checks_per_apiserver_s"].mean().reset_index()
    t = _in_order(t, list(s.by_interval), "inter_s")
    t["nodes"] = s.interval_nodes
    t["checks_per_node_s"] = t["checks_per_apiserver_s"] / s.interval_nodes
    return t


def interval_figure(t: pd.DataFrame, budget: Budget, largest: int) -> Any:
    """Left: checks per apiserver against ``inter``; right: the cluster size at which the
    local HAProxies' checks take the budget, with ``largest`` (nodes) marked."""
    intervals = sorted(set(t["inter_s"]))
    nodes = int(t["nodes"].iloc[0])
    ticks = (intervals, [f"{i:g}" for i in intervals])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for (lb, g), color in zip(t.groupby("lb", sort=False), ["C0", "C2"], strict=False):
        ax1.plot(g["inter_s"], g["checks_per_apiserver_s"], "o-", color=color, label=lb)
    ax1.set_ylabel(f"checks per apiserver per second at {fmt(nodes)} nodes (log)")
    ax1.set_title(f"Checks reaching each apiserver ({fmt(nodes)} nodes)", fontsize=10)
    ax1.legend(fontsize=8)
    loc = t[t["lb"] == INTER_LOCAL]
    for lim, text, ls in budget.lines():
        ax2.plot(loc["inter_s"], lim / loc["checks_per_node_s"].to_numpy(), "o" + ls,
                 color="C0", label=text.replace(" TLS handshakes", ""))
    ax2.axhline(largest, color="k", lw=0.8, ls="--")
    ax2.annotate(f"{fmt(largest)} nodes", (intervals[0], largest), va="bottom", fontsize=8)
    ax2.set_ylabel(f"nodes at which checks take {fmt(100 * budget.share)} % of a core (log)")
    ax2.set_title("Cluster size where the local HAProxies' checks become a load", fontsize=10)
    ax2.legend(fontsize=8, title="TLS handshakes", title_fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(*ticks)
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("HAProxy inter (s, log)")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("How does HAProxy's check interval change the load on the apiservers?",
                 fontsize=11)
    fig.tight_layout()
    return fig


def interval_finding(t: pd.DataFrame, budget: Budget, kubespray_inter: float = 15.0) -> str:
    """The finding under :func:`interval_figure`."""
    nodes = int(t["nodes"].iloc[0])
    loc = t[t["lb"] == INTER_LOCAL].set_index("inter_s")["checks_per_node_s"]
    ext = t[t["lb"] == INTER_EXTERNAL].set_index("inter_s")["checks_per_apiserver_s"]
    fast, slow = float(loc.index.min()), float(loc.index.max())
    at = loc.get(kubespray_inter)
    kubespray = ("" if at is None else
                 f"; with kubespray's {kubespray_inter:g} s from {fmt(budget.full_per_s / at)} "
                 f"to {fmt(budget.resumed_per_s / at)}")
    return (
        f"**Finding.** The check load falls as `inter` grows: from inter {fast:g} s to "
        f"{slow:g} s the local HAProxies' checks per apiserver fall from "
        f"{fmt(loc.loc[fast] * nodes)} to {fmt(loc.loc[slow] * nodes)} per second at "
        f"{fmt(nodes)} nodes ({fmt(loc.loc[fast] / loc.loc[slow])} times fewer for "
        f"{fmt(slow / fast)} times the interval). With inter {fast:g} s they take "
        f"{fmt(100 * budget.share)} % of a core from {fmt(budget.full_per_s / loc.loc[fast])} "
        f"(full handshakes) to {fmt(budget.resumed_per_s / loc.loc[fast])} (resumed) nodes"
        f"{kubespray}. One external HAProxy sends {fmt(ext.loc[fast])} (inter {fast:g} s) to "
        f"{fmt(ext.loc[slow])} (inter {slow:g} s) checks per apiserver per second whatever "
        f"the cluster size.")


def churn(rates: pd.DataFrame, s: Study) -> pd.DataFrame:
    """Per nginx ``proxy_timeout`` (in the sweep's order) and node count: new connections
    per apiserver per second, and per node per second over all apiservers.

    Columns: ``timeout``, ``nodes``, ``apiservers``, ``connections_per_apiserver_s``,
    ``connections_per_node_s``.
    """
    mine = rates[rates["scenario"] == s.churn.name].copy()
    mine["timeout"] = mine["balancers.local.proxy_timeout"].astype(str)
    mine["nodes"] = mine[NODES].astype(int)
    t = (mine.groupby(["timeout", "nodes"])[["apiservers", "connections_per_apiserver_s"]]
         .mean().reset_index())
    t = _in_order(t, list(dict.fromkeys(mine["timeout"])), "nodes", key="timeout")
    t["connections_per_node_s"] = (t["connections_per_apiserver_s"] * t["apiservers"]
                                   / t["nodes"])
    return t


def churn_figure(t: pd.DataFrame, budget: Budget) -> Any:
    """New connections per apiserver against the node count, one line per timeout."""
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for (timeout, g), color in zip(t.groupby("timeout", sort=False), ["C3", "C1"], strict=False):
        y = g["connections_per_apiserver_s"].to_numpy()
        ax.plot(g["nodes"], np.maximum(y, FLOOR), "o-", color=color,
                label=f"nginx proxy_timeout {timeout}"
                + ("" if (y > 0).any() else " (none: drawn at the floor)"))
    _limits(ax, budget, float(t["nodes"].min()), rates=False)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 2, None)
    ax.set_xlabel("worker nodes")
    ax.set_ylabel("new connections (TLS handshakes) per apiserver per second (log)")
    ax.set_title("How much reconnection does nginx's proxy_timeout cause? (kubespray #655)",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def churn_finding(t: pd.DataFrame, budget: Budget) -> str:
    """The finding under :func:`churn_figure`: the shortest timeout, against the others."""
    first = min(dict.fromkeys(t["timeout"]), key=parse_duration)
    short = t[t["timeout"] == first]
    per_node = float(short["connections_per_node_s"].mean())  # over all apiservers
    per_api_node = per_node / float(short["apiservers"].iloc[0])
    period = parse_duration(first)
    others = t[t["timeout"] != first]
    later = float(others["connections_per_apiserver_s"].max()) if len(others) else 0.0
    limit = (f"from about {fmt(budget.full_per_s / per_api_node)} nodes" if per_api_node > 0
             else "at no size (no connection was re-opened)")
    rest = "" if others.empty else (
        " With `proxy_timeout` " + ", ".join(dict.fromkeys(others["timeout"])) + " "
        + ("no connection was re-opened in the window." if later == 0 else
           f"the churn is {fmt(later)} per apiserver per second."))
    return (
        f"**Finding.** With `proxy_timeout {first}` every node re-opens "
        f"{fmt(per_node * period)} connections to the apiservers every {fmt(period)} s "
        f"(kubespray #655 reported \"about 5\" per node: this model's nodes run only a kubelet "
        f"and a kube-proxy), so the handshakes alone take {fmt(100 * budget.share)} % of a "
        f"core of each apiserver {limit} (full handshakes)." + rest)


def summary(t: pd.DataFrame, budget: Budget) -> pd.DataFrame:
    """:func:`by_size`'s table with the CPU share the checks take of one core if each is a
    full TLS handshake."""
    out = t.set_index(["lb", "nodes"])[
        ["checkers", "checks_per_apiserver_s", "connections_per_apiserver_s", "closed_form_s"]
    ].copy()
    out["CPU share of checks (full TLS)"] = out["checks_per_apiserver_s"] * budget.handshake_s
    return out
