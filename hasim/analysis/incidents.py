"""The reported incidents (docs/model.md, incidents) judged on a batch of their scenarios.

:func:`judge_incidents` takes the results of a batch that ran each incident's scenario
(``scenarios/incidents/``) and returns, per incident, what was reported, what the model
did, the criterion it is judged by (stated here, before any run) and whether it holds,
plus the series :func:`incidents_figure` draws. Notebook 03 calls both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hasim.analysis import failover
from hasim.analysis.failover import workers
from hasim.analysis.formulas import keepalived_takeover_window, kube_vip_takeover_window
from hasim.analysis.overhead import steady_rates
from hasim.analysis.report import fmt

#: What each report says, as the reference (docs/model.md, incidents).
REPORTED: Mapping[str, str] = {
    "KS #2150": "one master isolated, k8s 1.7 (no HTTP/2 ping), nginx local LB: ALL workers "
                "NotReady",
    "k8s #121793": "HTTP/2 ping 30 + 15 s > 40 s grace: nodes flap NotReady with healthy "
                   "masters left; a 50 s grace fixes it",
    "k8s #48638": "master powered off, clients without the ping: ~15-minute node-status gaps "
                  "(observed 15m25s)",
    "KS #655": "nginx proxy_timeout 3s: about 5 connections per node re-handshake TLS every 3 s",
    "KS #5663": "external HAProxy with ssl-hello-chk but no `check` never removes a dead master",
    "keepalived VIP (field)": "VIP failovers of 15-30 s with a 10 s check script (Platform9 "
                              "KB), 23-40 s (kube-keepalived-vip #78)",
    "kube-vip (field)": "failover about the lease duration",
}
REPORTED_655_PER_NODE = 5  # "about 5 connections per node" (kubespray #655)
#: ... over the period the report counts them in, the 3 s proxy_timeout of the template.
REPORTED_655_PERIOD_S = 3.0
REPORTED_48638_S = 15 * 60 + 25  # "15m25s" (kubernetes #48638)
FIELD_KEEPALIVED_S = (15, 40)  # the two field reports together


@dataclass(frozen=True)
class Judged:
    """The verdicts (``table``: incident, reported, model, criterion, reproduced?) and
    the series of each incident's panel."""

    table: pd.DataFrame
    panels: dict[str, tuple[Any, ...]]
    #: keepalived's script + VRRP window and kube-vip's, for the VIP panel.
    windows: dict[str, tuple[float, float]]


def judge_incidents(results: Any, scenarios: Mapping[str, Any]) -> Judged:
    """Each incident of :data:`REPORTED` judged on ``results`` (a batch that ran
    ``scenarios``, keyed like :data:`REPORTED`) by its stated criterion."""
    runs = results.runs
    # Rows are picked by the run ids of each incident's scenario.
    ns, det = results["node_status"], results["detections"]

    def runs_of(name: str) -> pd.DataFrame:
        return failover.runs_of(results, scenarios[name])

    rows: list[tuple[str, str, bool, str]] = []
    panels: dict[str, tuple[Any, ...]] = {}

    # KS #2150: share of workers NotReady over time
    s = scenarios["KS #2150"]
    w, ids = workers(s), runs_of("KS #2150")["run_id"]
    t = np.linspace(0, s.spec.duration, 400)
    sel = ns[ns["run_id"].isin(ids) & ns["host"].isin(w)]
    share_t = np.array([((sel["not_ready_at"] <= x) & ~(sel["ready_at"] <= x)).sum()
                        for x in t]) / (len(w) * len(ids))
    all_nr = sel.groupby("run_id")["host"].nunique().reindex(ids, fill_value=0) / len(w)
    panels["KS #2150"] = ("share of workers NotReady", t, share_t)
    rows.append(("KS #2150", f"{fmt(100 * all_nr.mean())} % of the {len(w)} workers NotReady "
                 f"(the lowest replication: {fmt(100 * all_nr.min())} %), from "
                 f"{fmt(sel['not_ready_at'].min() - s.spec.faults[0].at, 's')} after the "
                 "isolation", bool(all_nr.min() == 1),
                 "every worker NotReady in every replication"))

    # k8s #121793: workers NotReady at grace 40 vs 50
    s = scenarios["k8s #121793"]
    w, r = workers(s), runs_of("k8s #121793")
    cnt = (ns[ns["run_id"].isin(r["run_id"]) & ns["host"].isin(w)].groupby("run_id")["host"]
           .nunique().reindex(r["run_id"], fill_value=0))
    by_g = cnt.groupby(r.set_index("run_id")["point"], sort=False).mean()
    by_g.index = [f"grace {p.split('=')[-1]}" for p in by_g.index]
    panels["k8s #121793"] = ("workers NotReady per run", list(by_g.index), by_g.to_numpy())
    g40, g50 = by_g.iloc[0], by_g.iloc[-1]
    rows.append(("k8s #121793", f"{fmt(g40)} of {len(w)} workers NotReady per run at "
                 f"{by_g.index[0]}, {fmt(g50)} at {by_g.index[-1]}",
                 bool(g40 > 0 and g50 == 0), "workers NotReady at a 40 s grace, none at 50 s"))

    # k8s #48638: NotReady gaps with legacy clients
    s = scenarios["k8s #48638"]
    w, ids = workers(s), runs_of("k8s #48638")["run_id"]
    gaps = ns[ns["run_id"].isin(ids) & ns["host"].isin(w)]["duration_s"]
    panels["k8s #48638"] = ("NotReady gap of a worker (min)", gaps / 60, None)
    rows.append(("k8s #48638", f"median NotReady gap {fmt(gaps.median() / 60, 'min')} "
                 f"({fmt(len(gaps))} gaps; tcp_retries2 = "
                 f"{fmt(s.spec.clients.tcp_retries2_timeout, 's')})",
                 bool(abs(gaps.median() - REPORTED_48638_S) < 0.2 * REPORTED_48638_S),
                 "median gap within 20 % of 15m25s"))

    # KS #655: new connections per node per 3 s, steady state
    s = scenarios["KS #655"]
    rr = steady_rates(results)
    rr = rr[rr["scenario"] == s.name]
    per_node = (rr["connections_per_apiserver_s"] * rr["apiservers"] / len(workers(s))
                * REPORTED_655_PERIOD_S)
    per_node.index = rr["balancers.local.proxy_timeout"].astype(str)
    per_node = per_node.groupby(level=0, sort=False).mean()
    panels["KS #655"] = ("new connections per node every 3 s", list(per_node.index),
                         per_node.to_numpy())
    rows.append(("KS #655", f"{fmt(per_node.iloc[0], digits=2)} new connections per node every "
                 f"3 s at proxy_timeout {per_node.index[0]}, {fmt(per_node.iloc[-1], digits=2)} "
                 f"at {per_node.index[-1]} (Kubernetes 1.4 spoke HTTP/1.1: each of the "
                 "kubelet's 3 and kube-proxy's 2 watches is a connection)",
                 bool(abs(per_node.iloc[0] - REPORTED_655_PER_NODE) <= 0.3 * REPORTED_655_PER_NODE
                      and per_node.iloc[-1] < 1),
                 "within 30 % of 5 per node per 3 s (\"about 5\") at 3s; under 1 at 10m"))

    # KS #5663: how long the dead master stays in the external LB's rotation
    r = runs_of("KS #5663")
    d = det[det["run_id"].isin(r["run_id"]) & (det["backend"] == "master1")]
    stay = {}
    for pt, g in r.groupby("point", sort=False):
        got = d[d["run_id"].isin(g["run_id"])]["detect_s"]
        stay[pt] = (got.median() if len(got) else np.inf, len(got), len(g))
    panels["KS #5663"] = ("master1 in rotation after its crash (s)", list(stay),
                          [v[0] for v in stay.values()])
    no_check, with_check = list(stay.values())[0], list(stay.values())[-1]
    rows.append(("KS #5663", f"without check: marked down in {no_check[1]} of {no_check[2]} "
                 f"runs (stays in rotation to the end); with check: in {with_check[1]} of "
                 f"{with_check[2]}, after a median {fmt(with_check[0], 's')}",
                 bool(no_check[1] == 0 and with_check[1] > 0),
                 "never marked down without check in any run; marked down with it"))

    # The VIPs: takeover time
    moves = results["vip_moves"].merge(runs[["run_id", "scenario"]])
    ka, kv = scenarios["keepalived VIP (field)"], scenarios["kube-vip (field)"]
    fault_at = ka.spec.faults[0].at
    ka_t = moves[(moves["scenario"] == ka.name) & (moves["from"] == "extlb1")
                 & (moves["time"] >= fault_at)]["time"] - fault_at
    kv_t = moves[moves["scenario"] == kv.name]["takeover_s"]
    vip = ka.spec.balancers.external.vip
    ts = vip.track_script
    # The script's fall-th failed run (U(0, interval) + (fall-1) interval after the LB
    # died) puts the holder in FAULT: a priority-0 advert, and the backup takes over its
    # skew later.
    skew = keepalived_takeover_window(vip.advert_int, vip.priority - 1)[1] - 3 * vip.advert_int
    ka_win = ((ts.fall - 1) * ts.interval + skew, ts.fall * ts.interval + skew)
    kvip = kv.spec.balancers.external.vip
    kv_win = kube_vip_takeover_window(kvip.lease_duration, kvip.retry_period)
    panels["VIP"] = ("VIP move after the fault (s)", ka_t, kv_t)
    fo = results["failovers"].merge(runs[["run_id", "scenario"]])
    cut = fo[(fo["scenario"] == ka.name)
             & fo["client"].str.match(r"node\d+/(kubelet|kube-proxy)$")]["latency_s"]
    lo, hi = FIELD_KEEPALIVED_S
    rows.append(("keepalived VIP (field)", f"HAProxy dies on the holder; a "
                 f"{fmt(ts.interval, 's')} script (fall {ts.fall}) moves the VIP after "
                 f"{fmt(ka_t.min(), 's')} to {fmt(ka_t.max(), 's')} (window "
                 f"{fmt(ka_win[0], 's')} to {fmt(ka_win[1], 's')}); the workers' clients are "
                 f"cut off for a median {fmt(cut.median(), 's')} (field: {lo}-{hi} s)",
                 bool(lo <= cut.median() <= hi), f"median cut-off within the field's {lo}-{hi} s"))
    rows.append(("kube-vip (field)", f"takeover {fmt(kv_t.min(), 's')} to {fmt(kv_t.max(), 's')} "
                 f"with a {fmt(kvip.lease_duration, 's')} lease (window {fmt(kv_win[0], 's')} to "
                 f"{fmt(kv_win[1], 's')})", bool(((kv_t > kv_win[0]) & (kv_t < kv_win[1])).all()),
                 "every takeover inside the lease's closed-form window"))
    table = pd.DataFrame([{"incident": k, "reported": REPORTED[k], "model": m, "criterion": crit,
                           "reproduced?": "yes" if ok else "**no**"} for k, m, ok, crit in rows])
    return Judged(table, panels, {"keepalived": ka_win, "kube-vip": kv_win})


def incidents_figure(judged: Judged, scenarios: Mapping[str, Any]) -> Any:
    """One panel per incident: what the model did against what was reported."""
    import matplotlib.pyplot as plt

    panels = judged.panels
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    ax = axes[0][0]
    label, t, y = panels["KS #2150"]
    ax.step(t, y, where="post", color="C3")
    ax.axvline(scenarios["KS #2150"].spec.faults[0].at, color="k", ls="--", lw=0.8)
    ax.set_xlabel("simulated time (s); dashed: master1 isolated")
    ax.set_ylabel(label)
    ax.set_ylim(0, 1.05)
    ax.set_title("KS #2150: do ALL workers go NotReady?", fontsize=10)

    ax = axes[0][1]
    label, xs, y = panels["k8s #121793"]
    _bars(ax, xs, y, fmt)
    ax.set_xlabel("node-monitor-grace-period")
    ax.set_ylabel(label + " (mean)")
    ax.set_title("k8s #121793: do nodes flap at a 40 s grace, not at 50 s?", fontsize=10)

    ax = axes[0][2]
    label, g, _ = panels["k8s #48638"]
    ax.hist(g, bins=20, color="C0")
    ax.axvline(REPORTED_48638_S / 60, color="k", ls="--", lw=1, label="reported (15m25s)")
    ax.set_xlabel(label)
    ax.set_ylabel("worker gaps (count)")
    ax.set_title("k8s #48638: 15-minute node-status gaps?", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[1][0]
    label, xs, y = panels["KS #655"]
    _bars(ax, [f"proxy_timeout {x}" for x in xs], y, lambda v: fmt(v, digits=2))
    ax.axhline(REPORTED_655_PER_NODE, color="k", ls="--", lw=1, label="reported: about 5")
    ax.set_xlabel("nginx setting")
    ax.set_ylabel(label)
    ax.set_title("KS #655: a TLS reconnection storm?", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[1][1]
    label, xs, y = panels["KS #5663"]
    s = scenarios["KS #5663"]
    dur = s.spec.duration - s.spec.faults[0].at
    vals = [v if np.isfinite(v) else dur for v in y]
    bars = ax.bar(xs, vals, color=["C3" if not np.isfinite(v) else "C2" for v in y])
    for b, v in zip(bars, y, strict=True):
        ax.annotate("never marked down" if not np.isfinite(v) else fmt(v, "s"),
                    (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xlabel("external HAProxy servers (sweep point)")
    ax.set_ylabel(label)
    ax.set_title("KS #5663: does a dead master stay in rotation without check?", fontsize=10)

    ax = axes[1][2]
    label, a, b = panels["VIP"]
    ax.axhspan(*FIELD_KEEPALIVED_S, color="C1", alpha=0.15, label="keepalived, field reports")
    ax.axhspan(*judged.windows["keepalived"], xmin=0, xmax=0.5, color="C0", alpha=0.25,
               label="keepalived, script + VRRP window")
    ax.axhspan(*judged.windows["kube-vip"], xmin=0.5, xmax=1, color="C4", alpha=0.25,
               label="kube-vip, client-go window")
    ax.plot(np.zeros(len(a)), a, "o", color="C0")
    ax.plot(np.ones(len(b)), b, "o", color="C4")
    ax.set_xticks([0, 1], ["keepalived VRRP", "kube-vip"])
    ax.set_xlim(-0.5, 1.5)
    ax.set_xlabel("VIP manager (dots: simulated takeovers)")
    ax.set_ylabel(label)
    ax.set_title("VIP failover: field reports vs the model", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("Does the model reproduce the reported incidents? (docs/model.md, incidents)",
                 fontsize=12)
    fig.tight_layout()
    return fig


def _bars(ax: Any, xs: Any, y: Any, label: Any) -> None:
    bars = ax.bar(xs, y, color=["C3", "C2"][: len(xs)])
    for b, v in zip(bars, y, strict=True):
        ax.annotate(label(v), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                    va="bottom", fontsize=8)


#: Why the model misses an incident's criterion, where the model knows why.
WHY_MISSED = {
    "k8s #121793": (
        "At a 50 s grace the model still flaps a few workers: HTTP/2's idle clock runs from "
        "the node's last read, which may be a status update after its last lease, and a lease "
        "whose tries hang on the dead connection until the ping closes it waits for the next "
        "renew interval (the kubelet's lease controller), so a few leases go unrenewed for "
        "more than 50 s. The report's \"50 s fixes it\" holds for most nodes in the model, "
        "not for all."),
}


def incidents_finding(judged: Judged) -> str:
    """How many reports the model reproduces by their criteria; each one it does not, with
    what the model found and, where known, why."""
    table = judged.table
    missed = table[table["reproduced?"] != "yes"]
    text = (f"**Finding.** {len(table) - len(missed)} of {len(table)} reports are reproduced "
            f"by the model as written, each by its stated criterion.")
    if not missed.empty:
        text += (" Not reproduced: " + "; ".join(
            f"**{r['incident']}** ({r['model']}; criterion: {r['criterion']})"
            for _, r in missed.iterrows()) + ".")
        text += "".join(f" {WHY_MISSED[i]}" for i in missed["incident"] if i in WHY_MISSED)
    return text

