"""What sets the failover latency and the NotReady time: the timer sweeps of notebook 03.

Each sweep powers master1 off and varies the timers of one side:

- :func:`profile_grace`: the client profile (client-go's version) against the
  controller-manager's ``node-monitor-grace-period``;
- :func:`haproxy_timers`: the local HAProxy's ``inter`` and ``fall``, each node's detection
  against the closed-form window (docs/model.md, HAProxy);
- :func:`nginx_timers`: the local nginx's ``fail_timeout`` and ``proxy_connect_timeout``.

Each returns the tables of its question; a ``*_figure`` and a ``*_finding`` function per
sweep turn them into the figure and the sentence under it. Sweep points are the batch's
labels (``inter=2s,fall=3``); the values are the runs' own columns, one per dotted
sweep key (:func:`sweep_values`), never parsed back out of a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hasim.analysis.compare import victims  # noqa: E402
from hasim.analysis.formulas import haproxy_detection_window  # noqa: E402
from hasim.analysis.plots import ecdf_on, heatmap_on  # noqa: E402
from hasim.analysis.report import fmt, fmt_range  # noqa: E402

#: The sweep keys of the profile study, as its point labels name them.
PROFILE, GRACE = "clients.profile", "controller_manager.node_monitor_grace_period"
#: ... of the HAProxy and nginx studies.
INTER, FALL = "balancers.local.inter", "balancers.local.fall"
FAIL_TIMEOUT = "balancers.local.fail_timeout"
CONNECT_TIMEOUT = "balancers.local.proxy_connect_timeout"
#: The client class of a worker's clients ends with this (``kubelet@kube-node``...).
WORKER = "@kube-node"


def workers(scenario: Any) -> list[str]:
    """The worker hosts (``kube-node``) of a scenario's cluster."""
    return list(scenario.cluster.members("kube-node"))


def sweep_values(results: Any, scenario: Any) -> pd.DataFrame:
    """``scenario``'s successful runs: ``run_id``, ``point``, ``replication`` and one column
    per key of its sweep (the dotted key, the value as the scenario gives it)."""
    keys = [k for k in (scenario.spec.sweep or {}) if k in results.runs.columns]
    return runs_of(results, scenario)[["run_id", "point", "replication", *keys]]


def runs_of(results: Any, scenario: Any) -> pd.DataFrame:
    """The successful runs of ``scenario`` in a batch's results."""
    runs = results.runs
    return runs[(runs["scenario"] == scenario.name) & (runs["status"] == "ok")]


def not_ready_per_worker(results: Any, scenario: Any) -> pd.DataFrame:
    """NotReady seconds of every worker in every successful run of ``scenario`` (0 if it
    never was), with the run's ``point``, ``replication`` and sweep values."""
    mine = runs_of(results, scenario)
    w = workers(scenario)
    grid = pd.MultiIndex.from_product([mine["run_id"], w], names=["run_id", "host"])
    ns = results["node_status"]
    got = (ns[ns["run_id"].isin(mine["run_id"]) & ns["host"].isin(w)]
           .groupby(["run_id", "host"])["duration_s"].sum())
    out = got.reindex(grid, fill_value=0.0).reset_index()
    return out.merge(sweep_values(results, scenario), on="run_id")


def worker_victims(results: Any, scenario: Any) -> pd.DataFrame:
    """:func:`hasim.analysis.compare.victims` of ``scenario``'s runs, the workers' clients
    only, with the run's ``point`` and sweep values."""
    vic = victims(results)
    vic = vic[(vic["scenario"] == scenario.name)
              & vic["client_class"].astype(str).str.endswith(WORKER)]
    return vic.merge(sweep_values(results, scenario).drop(columns="replication"), on="run_id")


def _order(series: pd.Series) -> list[str]:
    return list(dict.fromkeys(series))


# --- client profile x grace period -------------------------------------------------------------


@dataclass(frozen=True)
class ProfileGrace:
    kubelets: pd.DataFrame  # the workers' kubelets: latency_s, PROFILE, GRACE
    not_ready: pd.DataFrame  # per worker and run: duration_s, PROFILE, GRACE
    profiles: list[str]
    graces: list[str]
    scenario: Any


def profile_grace(results: Any, scenario: Any) -> ProfileGrace:
    """The kubelets' failover and the workers' NotReady time per client profile and
    grace period (sweep keys ``clients.profile`` and
    ``controller_manager.node_monitor_grace_period``)."""
    vic = worker_victims(results, scenario)
    kubelets = vic[vic["client_class"] == "kubelet" + WORKER]
    nr = not_ready_per_worker(results, scenario)
    return ProfileGrace(kubelets, nr, _order(kubelets[PROFILE]),
                        _order(kubelets[GRACE]), scenario)


def profile_figure(pg: ProfileGrace, reps: int) -> Any:
    """Left: the kubelets' failover ECDF per profile; right: mean NotReady time per
    worker per profile and grace period, labelled with the share of workers NotReady."""
    kub, nr, profiles, graces = pg.kubelets, pg.not_ready, pg.profiles, pg.graces
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    ecdf_on(ax1, {p: kub.loc[kub[PROFILE] == p, "latency_s"] for p in profiles}, xmin=1)
    ax1.set_xlabel("failover latency of the workers' kubelets (s, log)")
    ax1.set_ylabel("share of kubelets back by then")
    ax1.set_title("How long is a kubelet cut off? (both grace periods pooled)", fontsize=10)
    ax1.legend(title="client profile", fontsize=8)
    width = 0.8 / len(graces)
    for k, g in enumerate(graces):
        sel = nr[nr[GRACE] == g]
        mean = sel.groupby(PROFILE)["duration_s"].mean().reindex(profiles)
        share = (sel.assign(nr=sel["duration_s"] > 0).groupby(PROFILE)["nr"].mean()
                 .reindex(profiles))
        xs = np.arange(len(profiles)) + (k - (len(graces) - 1) / 2) * width
        bars = ax2.bar(xs, np.maximum(mean.to_numpy(), 0.1), width, label=f"grace {g}")
        for x, b, s in zip(xs, bars, share, strict=True):
            ax2.annotate(f"{fmt(100 * s)} %\nNotReady", (x, b.get_height()), ha="center",
                         va="bottom", fontsize=7)
    ax2.set_yscale("log")
    ax2.set_xticks(range(len(profiles)), profiles)
    ax2.set_xlabel("client profile (Kubernetes version of client-go)")
    ax2.set_ylabel("NotReady time per worker, mean (s, log; 0 drawn at 0.1)")
    ax2.set_title("How long are workers NotReady? (label: share of workers that were)",
                  fontsize=10)
    ax2.legend(fontsize=8, title="node-monitor-grace-period")
    ax2.set_ylim(0.1, max(float(nr["duration_s"].max()), 1.0) * 5)
    fig.suptitle(f"master1 powered off: client profile x grace period "
                 f"({len(workers(pg.scenario))} workers, {reps} replication(s))", fontsize=11)
    fig.tight_layout()
    return fig


def profile_finding(pg: ProfileGrace) -> str:
    """Per profile: median failover and, per grace period, the share of workers NotReady
    and their mean NotReady time; then the timer that decides each profile."""
    kub, nr = pg.kubelets, pg.not_ready
    cl = pg.scenario.spec.clients
    grace = pg.scenario.spec.controller_manager.node_monitor_grace_period
    lat = kub.groupby(PROFILE)["latency_s"].median()
    same = (kub.groupby([PROFILE, GRACE])["latency_s"].median().unstack()
            .nunique(axis=1).eq(1).all())
    share = nr.assign(nr=nr["duration_s"] > 0).groupby([PROFILE, GRACE])["nr"].mean()
    mean_nr = nr.groupby([PROFILE, GRACE])["duration_s"].mean()
    lines = []
    for p in pg.profiles:
        per_grace = "; ".join(
            f"grace {g}: {fmt(100 * share.loc[(p, g)])} % of the workers NotReady, "
            f"{fmt(mean_nr.loc[(p, g)])} s each on average" for g in pg.graces)
        lines.append(f"- **{p}**: median failover latency {fmt(lat.loc[p], 's')}; {per_grace}.")
    ping = cl.http2_read_idle_timeout + cl.http2_ping_timeout
    return ("**Finding.** " + ("The grace period does not change when a kubelet gets back "
                               "(same medians); it changes whether the controller-manager "
                               "notices. " if same else "") + "\n" + "\n".join(lines) + "\n\n"
            + f"A `legacy` kubelet waits for the kernel to give up on the dead connection "
            f"(tcp_retries2, {fmt(cl.tcp_retries2_timeout, 's')} in these scenarios); a "
            f"`modern` one for the HTTP/2 ping ({fmt(cl.http2_read_idle_timeout, 's')} + "
            f"{fmt(cl.http2_ping_timeout, 's')} after its last read)"
            + (f", longer than the {fmt(grace, 's')} grace: the k8s #121793 flap."
               if ping > grace else "."))


# --- HAProxy inter x fall ----------------------------------------------------------------------


@dataclass(frozen=True)
class HAProxyTimers:
    detections: pd.DataFrame  # each node's HAProxy marking master1 down: point, detect_s
    windows: pd.DataFrame  # per point: lo_s, hi_s (closed form), inside (share in it)
    not_ready_mean_s: pd.Series  # per point: NotReady time per worker, mean
    p95_s: pd.Series  # per point: p95 failover of cut-off worker clients
    points: list[str]


def haproxy_timers(results: Any, scenario: Any, backend: str = "master1") -> HAProxyTimers:
    """Each local HAProxy's detection of ``backend``'s power-off per sweep point (keys
    ``balancers.local.inter`` and ``balancers.local.fall``), the closed-form window
    ``U(0, inter) + fall*d + (fall-1)*fastinter`` and the share of detections in it, and
    what the workers saw."""
    mine = sweep_values(results, scenario)
    points = _order(mine["point"])
    det = results["detections"].merge(mine[["run_id", "point"]])
    det = det[det["backend"] == backend]
    rows = []
    for pt in points:
        over = mine[mine["point"] == pt].iloc[0]
        spec = scenario.with_overrides({INTER: over[INTER], FALL: int(over[FALL])}).spec
        lo, hi = haproxy_detection_window(spec.balancers.local, spec.network.rtt,
                                          blackholed=True)
        d = det.loc[det["point"] == pt, "detect_s"]
        # 10 ms of slack: the window's ends are the rtt-rounded check durations
        inside = float(((d >= lo - 0.01) & (d <= hi + 0.01)).mean()) if len(d) else np.nan
        rows.append({"point": pt, "lo_s": lo, "hi_s": hi, "inside": inside})
    nr = not_ready_per_worker(results, scenario)
    vic = worker_victims(results, scenario)
    return HAProxyTimers(
        det[["run_id", "point", "detect_s"]].reset_index(drop=True), pd.DataFrame(rows),
        nr.groupby("point")["duration_s"].mean().reindex(points),
        vic[vic["cut_off"]].groupby("point")["latency_s"].quantile(0.95).reindex(points),
        points)


def haproxy_figure(h: HAProxyTimers) -> Any:
    """Left: each node's detection per point over the closed-form band; right: mean
    NotReady time per worker (bars) and the p95 failover of cut-off worker clients."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, w in enumerate(h.windows.itertuples()):
        ax1.add_patch(plt.Rectangle((i - 0.35, w.lo_s), 0.7, w.hi_s - w.lo_s, color="C0",
                                    alpha=0.15))
        d = h.detections.loc[h.detections["point"] == w.point, "detect_s"]
        ax1.plot(np.full(len(d), i) + np.linspace(-0.25, 0.25, len(d)), d, ".", color="C0",
                 alpha=0.5)
    ax1.set_ylabel("time to mark master1 down (s), one dot per node's HAProxy")
    ax1.set_title("When does each node's HAProxy stop sending to the dead master?\n"
                  "(band: the closed-form window, docs/model.md)", fontsize=10)
    xs = range(len(h.points))
    ax2.bar(xs, h.not_ready_mean_s.to_numpy(), color="C1",
            label="NotReady time per worker, mean")
    ax2.plot(xs, h.p95_s.to_numpy(), "ks", label="p95 failover latency of cut-off worker "
             "clients")
    ax2.set_ylabel("seconds")
    ax2.set_title("What do the timers change for the workers?", fontsize=10)
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xticks(xs, h.points, rotation=25, ha="right", fontsize=8)
        ax.set_xlabel("local HAProxy timers")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("master1 powered off behind kubespray's local HAProxy: inter x fall",
                 fontsize=11)
    fig.tight_layout()
    return fig


def haproxy_finding(h: HAProxyTimers) -> str:
    med = h.detections.groupby("point")["detect_s"].median()
    p95, mean = h.p95_s, h.not_ready_mean_s
    # the clients do not follow HAProxy when their p95 moves less than a tenth
    flat = p95.max() - p95.min() < 0.1 * p95.min()
    return (
        f"**Finding.** {fmt(100 * float(h.windows['inside'].mean()))} % of the simulated "
        f"detections fall in the closed-form window (docs/model.md). Faster checks take the "
        f"dead master out of rotation sooner (median {fmt(med.min(), 's')} at {med.idxmin()}, "
        f"{fmt(med.max(), 's')} at {med.idxmax()}), "
        + (f"but the clients' failover does not follow (p95 "
           f"{fmt_range(p95.min(), p95.max(), 's')}): a kubelet is stuck on its established "
           f"connection until its HTTP/2 ping gives up, whatever HAProxy knows. " if flat else
           f"and the clients' p95 failover ranges over {fmt_range(p95.min(), p95.max(), 's')}. ")
        + f"The workers' mean NotReady time goes from {fmt(mean.min(), 's')} ({mean.idxmin()}) "
        f"to {fmt(mean.max(), 's')} ({mean.idxmax()}).")


# --- nginx fail_timeout x proxy_connect_timeout ------------------------------------------------

NGINX_GRIDS = ("NotReady time per worker, mean (s)", "failed requests of worker clients per run",
               "p95 failover latency of cut-off worker clients (s)")
_NGINX_KEYS = [FAIL_TIMEOUT, CONNECT_TIMEOUT]


@dataclass(frozen=True)
class NginxTimers:
    grids: dict[str, pd.DataFrame]  # NGINX_GRIDS: fail_timeout rows x connect timeout columns
    not_ready: pd.DataFrame  # per worker and run, with the two timers
    reprobes: pd.Series  # per run: nginx's passive re-probes of the dead master


def nginx_timers(results: Any, scenario: Any) -> NginxTimers:
    """Per (``fail_timeout``, ``proxy_connect_timeout``): the workers' mean NotReady
    time, their clients' failed requests per run and the p95 failover of the cut-off
    ones; and the passive re-probes per run."""
    mine = sweep_values(results, scenario)
    fts, cts = _order(mine[FAIL_TIMEOUT]), _order(mine[CONNECT_TIMEOUT])
    nr = not_ready_per_worker(results, scenario)
    vic = worker_victims(results, scenario)
    series = [
        nr.groupby(_NGINX_KEYS)["duration_s"].mean(),
        vic.groupby([*_NGINX_KEYS, "run_id"])["lost_requests"].sum().groupby(_NGINX_KEYS).mean(),
        vic[vic["cut_off"]].groupby(_NGINX_KEYS)["latency_s"].quantile(0.95),
    ]
    grids = {title: s.unstack(CONNECT_TIMEOUT).reindex(index=fts, columns=cts)
             for title, s in zip(NGINX_GRIDS, series, strict=True)}
    hc = results["health_checks"]
    passive = hc[hc["run_id"].isin(mine["run_id"]) & (hc["kind"] == "passive")]
    reprobes = passive.groupby("run_id")["count"].sum().reindex(mine["run_id"], fill_value=0)
    return NginxTimers(grids, nr, reprobes)


def nginx_figure(n: NginxTimers) -> Any:
    """One annotated heat map per grid of :data:`NGINX_GRIDS`."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for ax, (title, grid) in zip(axes, n.grids.items(), strict=True):
        unit = title.split(" (")[-1].rstrip(")") if "(" in title else "requests"
        heatmap_on(ax, grid, cmap="Oranges", label=unit)
        ax.set_xlabel("proxy_connect_timeout")
        ax.set_ylabel("fail_timeout")
        ax.set_title(title, fontsize=9)
    fig.suptitle("master1 powered off behind the local nginx: what do fail_timeout and "
                 "proxy_connect_timeout change?", fontsize=11)
    fig.tight_layout()
    return fig


def nginx_finding(n: NginxTimers) -> str:
    nr = n.not_ready
    p95 = n.grids[NGINX_GRIDS[2]].stack()
    cts = list(n.grids[NGINX_GRIDS[0]].columns)
    fts = list(n.grids[NGINX_GRIDS[0]].index)
    by_ct = nr.groupby(CONNECT_TIMEOUT)["duration_s"].mean().reindex(cts)
    by_ft = nr.groupby(FAIL_TIMEOUT)["duration_s"].mean().reindex(fts)

    def flat(x: pd.Series) -> bool:  # within 5 % of its largest value
        return bool(x.max() - x.min() < 0.05 * max(x.max(), 1e-9))

    text = [f"**Finding.** Over the whole grid the p95 failover latency is "
            f"{fmt_range(p95.min(), p95.max(), 's')}"
            + (": the HTTP/2 ping, not nginx, decides when a kubelet leaves the dead master."
               if flat(p95) else ".")]
    text.append("Mean NotReady time per worker by `proxy_connect_timeout`: "
                + ", ".join(f"{fmt(v, 's')} at {ct}" for ct, v in by_ct.items())
                + (" — when the kubelet redials, nginx's least_conn tries the dead master first "
                   "(it holds no connection), and the request waits for that connect to fail."
                   if by_ct.iloc[-1] > by_ct.iloc[0] else "."))
    if flat(by_ft):
        probes = n.reprobes
        text.append(
            "`fail_timeout` changes nothing here "
            f"({fmt_range(by_ft.min(), by_ft.max(), 's')} at every value): "
            + ("no worker's nginx ever re-probed the dead master (a re-probe needs a new "
               "connection after fail_timeout, and the kubelets keep theirs)."
               if probes.max() == 0 else
               f"the workers' nginx re-probed the dead master "
               f"{fmt_range(probes.min(), probes.max())} time(s) per run in all."))
    else:
        text.append("By `fail_timeout`: "
                    + ", ".join(f"{fmt(v, 's')} at {ft}" for ft, v in by_ft.items()) + ".")
    return " ".join(text)
