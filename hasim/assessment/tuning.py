"""Tuning the recommended layout: its LB timers and the grace period, and the knee of the
trade-off between failover latency and health-check load (docs/assess.md, "Tuning").

The grid: nginx ``fail_timeout`` x ``max_fails`` (passive checks: its only load is the
re-probes of a failed server), HAProxy ``inter`` x ``fall`` x ``rise`` (local, or the
external pair's), and for every layout ``node_monitor_grace_period`` 40 s (kubespray) and
50 s (upstream since 1.32). Each setting faces a crash and a power-off of the first master.

A setting is *safe* when its mean NotReady nodes and never-recovered clients are no worse
than the best setting's (within half a node or client); the Pareto front is the safe
settings no other safe one beats on both mean p95 failover and checks per apiserver per
second; the knee is the front's point nearest the ideal corner (best latency, least load)
once both axes are scaled to the front's range.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hasim.assessment.layouts import Layout
from hasim.kubespray.knobs import Knobs

GRACE = ("40s", "50s")
#: kubespray variable of the grace period (roles/kubernetes/control-plane/defaults).
GRACE_VAR = "kube_controller_node_monitor_grace_period"


def grid(layout: Layout) -> list[dict[str, Any]]:
    """The settings tried on ``layout``, as scenario overrides."""
    local = layout.balancers.get("local", {}).get("kind")
    ext = layout.balancers.get("external")
    timers: list[dict[str, Any]]
    if local == "nginx":
        timers = [{"balancers.local.fail_timeout": ft, "balancers.local.max_fails": mf}
                  for ft, mf in itertools.product(("1s", "5s", "10s", "30s"), (1, 3))]
    elif local == "haproxy":
        timers = [{"balancers.local.inter": i, "balancers.local.fastinter": i,
                   "balancers.local.downinter": i, "balancers.local.fall": f,
                   "balancers.local.rise": r}
                  for i, f, r in itertools.product(("2s", "5s", "15s"), (2, 3), (2,))]
    elif ext is not None and ext.get("vip", {}).get("kind") != "kube-vip":
        timers = [{"balancers.external.inter": i, "balancers.external.fall": f,
                   "balancers.external.rise": r}
                  for i, f, r in itertools.product(("1s", "2s", "5s"), (2, 3), (2,))]
    else:
        timers = [{}]
    return [{**t, "controller_manager.node_monitor_grace_period": g}
            for t in timers for g in GRACE]


def _label(setting: Mapping[str, Any]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in setting.items())


def pareto(df: pd.DataFrame, x: str = "p95_failover_s", y: str = "checks_per_apiserver_s"
           ) -> pd.Series:
    """Whether each row is on the front: no other row is at least as good on both ``x``
    and ``y`` and better on one (lower is better)."""
    xs, ys = df[x].to_numpy(dtype=float), df[y].to_numpy(dtype=float)
    on = []
    for i in range(len(df)):
        beaten = ((xs <= xs[i]) & (ys <= ys[i]) & ((xs < xs[i]) | (ys < ys[i]))).any()
        on.append(not beaten)
    return pd.Series(on, index=df.index)


def knee(front: pd.DataFrame, x: str = "p95_failover_s", y: str = "checks_per_apiserver_s"
         ) -> Any:
    """The index of the front's point nearest the ideal corner, both axes scaled to 0-1."""
    xs, ys = front[x].to_numpy(dtype=float), front[y].to_numpy(dtype=float)

    def scale(v: np.ndarray) -> np.ndarray:
        span = v.max() - v.min()
        return (v - v.min()) / span if span > 0 else np.zeros_like(v)

    d = np.hypot(scale(xs), scale(ys))
    return front.index[int(np.argmin(d))]


def tune_layout(subject: Any, layout: Layout, knobs: Knobs, out: Path, reps: int,
                executor: str, jobs: int | None, scheduler: str | None,
                progress: bool | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run the grid on ``layout``; return one row per setting and the recommended one."""
    from hasim.analysis.compare import held_past
    from hasim.assessment.assess import FAULT_AT, RUN_DURATION, layout_scenario
    from hasim.assessment.verdict import run_figures
    from hasim.batches.batch import run_batch
    from hasim.batches.results import load_results

    masters = subject.cluster.members("kube-master")
    hold = held_past(RUN_DURATION)
    faults = [{"at": FAULT_AT, "target": masters[0], "kind": k, "duration": hold}
              for k in ("crash", "poweroff")]
    settings = grid(layout)
    scenarios, rows = [], []
    for i, setting in enumerate(settings):
        for fault in faults:
            name = f"{subject.name} | tune {layout.name} | {i:02d} | {fault['kind']}"
            scenarios.append(layout_scenario(subject, layout, knobs, name, setting,
                                             [fault], reps))
            rows.append({"scenario": name, "layout": layout.name, "setting": i,
                         "fault": f"{fault['kind']} {masters[0]}", "kind": fault["kind"],
                         "target": masters[0]})
    cells = pd.DataFrame(rows)
    run_batch(scenarios, out=out, executor=executor,  # type: ignore[arg-type]
              jobs=jobs, scheduler=scheduler, requests=False, progress=progress)
    figures = run_figures(load_results(out), cells)
    table = []
    for i, setting in enumerate(settings):
        g = figures[figures["setting"] == i]
        row: dict[str, Any] = {"setting": i, "label": _label(setting), **setting}
        for f in ("p95_failover_s", "checks_per_apiserver_s", "not_ready_nodes",
                  "never_recovered", "client_time_lost_s"):
            row[f] = float(g[f].mean()) if len(g) else math.nan
        table.append(row)
    df = pd.DataFrame(table)
    if df.empty:
        return df, {}
    best_nr = df["not_ready_nodes"].min()
    best_never = df["never_recovered"].min()
    df["safe"] = (df["not_ready_nodes"] <= best_nr + 0.5) & (df["never_recovered"] <= best_never
                                                               + 0.5)
    safe = df[df["safe"]]
    df["front"] = False
    df.loc[safe.index, "front"] = pareto(safe)
    front = df[df["front"]]
    k = knee(front)
    df["knee"] = df.index == k
    chosen = settings[int(df.at[k, "setting"])]
    grace = chosen["controller_manager.node_monitor_grace_period"]
    timers = {key.rsplit(".", 1)[-1]: v for key, v in chosen.items()
              if not key.startswith("controller_manager")}
    result = {
        "setting": _label(chosen),
        "timers": timers,
        # The grace period is a kubespray variable; the LB timers are not (kubespray's
        # templates hard-code them): they go into the rendered configuration.
        "vars": {GRACE_VAR: grace} if grace != "40s" else {},
        "p95_failover_s": round(float(df.at[k, "p95_failover_s"]), 6),
        "checks_per_apiserver_s": round(float(df.at[k, "checks_per_apiserver_s"]), 6),
        "front": [_label(settings[int(s)]) for s in front["setting"]],
    }
    return df, result


__all__: Sequence[str] = ("grid", "knee", "pareto", "tune_layout")
