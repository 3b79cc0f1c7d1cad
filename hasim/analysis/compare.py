"""The HA-mode comparison: every mode x every single fault, and what each fault cost.

:func:`fault_matrix` turns one scenario file per HA mode into one scenario per (mode,
fault): a crash and a power-off of each master and of the mode's load balancer, each held
until the end of the run (so a failback cannot be mistaken for the failover). Every
scenario keeps its file's ``seed``, so replication ``r`` of every cell sees the same client
phases (common random numbers, :mod:`hasim.batches.seeds`).

:func:`impact` reads a result directory of that matrix back and tells, per run, who was
hurt: the failover latency of each client the fault cut off (by client class), the nodes
that went NotReady although they were up (bystanders), and the requests that failed.
:func:`rank_modes` ranks the modes on those figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hasim.graph.topology import build_topology
from hasim.spec.scenario import Scenario, load_scenario

#: Fault kinds of the matrix aimed at a host (a master, an external LB instance).
HOST_FAULTS = ("crash", "poweroff")
#: Client classes of the worker nodes: the ones every HA mode is about.
NODE_CLASSES = ("kubelet@kube-node", "kube-proxy@kube-node")
#: How a fault kind reads in a fault group (``LB crash`` covers a local LB's lb-crash).
GROUP_KINDS = {"crash": "crash", "stop": "stop", "lb-crash": "crash", "poweroff": "power-off"}
#: Client classes in words.
CLASS_LABELS = {
    "kubelet@kube-node": "kubelet on a worker",
    "kube-proxy@kube-node": "kube-proxy on a worker",
    "kubelet@kube-master": "kubelet on a master",
    "kube-proxy@kube-master": "kube-proxy on a master",
    "flannel@kube-node": "flannel on a worker (etcd)",
    "flannel@kube-master": "flannel on a master (etcd)",
    "calico-node@kube-node": "calico-node on a worker",
    "calico-node@kube-master": "calico-node on a master",
    "kube-flannel@kube-node": "flannel on a worker (apiserver)",
    "kube-flannel@kube-master": "flannel on a master (apiserver)",
    "cilium@kube-node": "cilium on a worker",
    "cilium@kube-master": "cilium on a master",
}


@dataclass(frozen=True)
class Matrix:
    """The scenarios of a comparison and one row per scenario describing its cell:
    ``scenario`` (its name), ``mode`` (the label given), ``fault`` (e.g. ``crash
    master2``), ``fault_kind``, ``target`` (a host), ``target_role`` (``master`` or
    ``LB``), ``group`` (``master crash``, ``master power-off``, ``LB crash``, ``LB
    power-off``), ``source`` (the mode's scenario file)."""

    scenarios: list[Scenario]
    cells: pd.DataFrame


def lb_faults(scenario: Scenario) -> list[tuple[str, str]]:
    """The (kind, host) faults that hit the load balancer of a scenario's HA mode.

    An external LB: a crash and a power-off of its first instance (the VIP holder when
    there is a VIP). A local LB on every node: the LB process of the first node dies
    (``lb-crash``); its power-off would be the node's own. No LB (the default mode): none.
    """
    g = build_topology(scenario)
    ext = sorted({d["host"] for _, d in g.nodes(data=True)
                  if d["component"] == "external-lb" and not d.get("virtual")})
    dedicated = [h for h in ext if not scenario.cluster.has_host(h)]
    if dedicated:
        return [(kind, dedicated[0]) for kind in HOST_FAULTS]
    local = [d["host"] for _, d in g.nodes(data=True) if d["component"] in ("lb", "external-lb")]
    nodes = [h for h in scenario.cluster.members("kube-node") if h in local]
    if nodes:
        return [("lb-crash", nodes[0])]
    return []


def fault_matrix(
    modes: Mapping[str, str | os.PathLike[str] | Scenario],
    kinds: Sequence[str] = HOST_FAULTS,
    masters: Sequence[int] | None = None,
    lb: bool = True,
    at: str = "60s",
    duration: str = "5m",
    overrides: Mapping[str, Any] | None = None,
) -> Matrix:
    """One scenario per (HA mode, fault).

    ``modes`` maps a label to a scenario file (or scenario) of that mode; its own faults
    are replaced. ``kinds`` of faults hit each master (``masters``: positions in
    ``kube-master``, default all) and, with ``lb``, the mode's load balancer
    (:func:`lb_faults`). Each fault starts ``at`` and lasts past the end of the run
    (``duration``). ``overrides`` (dotted keys) apply to every scenario.
    """
    scenarios: list[Scenario] = []
    rows: list[dict[str, Any]] = []
    for label, source in modes.items():
        base = source if isinstance(source, Scenario) else load_scenario(source)
        if overrides:
            base = base.with_overrides(dict(overrides))
        members = base.cluster.members("kube-master")
        picks = range(len(members)) if masters is None else masters
        faults = [(kind, members[i], "master") for i in picks for kind in kinds]
        if lb:
            faults += [(kind, host, "LB") for kind, host in lb_faults(base)
                       if kind not in HOST_FAULTS or kind in kinds]
        for kind, host, role in faults:
            fault = f"{kind} {host}"
            name = f"{label} | {fault}"
            hold = {"at": at, "target": host, "kind": kind,
                    "duration": held_past(duration)}
            scenarios.append(base.with_overrides({
                "name": name, "faults": [hold], "duration": duration, "sweep": {}}))
            rows.append({"scenario": name, "mode": label, "fault": fault, "fault_kind": kind,
                         "target": host, "target_role": role,
                         "group": f"{role} {GROUP_KINDS.get(kind, kind)}",
                         "source": str(getattr(source, "path", source))})
    return Matrix(scenarios, pd.DataFrame(rows))


def held_past(duration: str) -> str:
    """A fault duration past the end of a run of ``duration``: held down throughout."""
    from hasim.spec.units import parse_duration

    return f"{parse_duration(duration) + 3600:g}s"


# --- what each run cost -----------------------------------------------------------------------


def _fault_hosts(state_changes: pd.DataFrame) -> dict[str, set[str]]:
    """Per run, the hosts a crash or power-off took down (their own NotReady is the fault
    itself, not damage it did to others)."""
    out: dict[str, set[str]] = {}
    if state_changes.empty or "component" not in state_changes:
        return out
    f = state_changes[(state_changes["component"] == "fault")
                      & state_changes["to"].isin(HOST_FAULTS)]
    for rid, host in zip(f["run_id"], f["host"], strict=True):
        out.setdefault(str(rid), set()).update(str(host).split(","))
    return out


def victims(results: Any, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (run, fault, client the fault did not take down): the failovers table
    with the run's ``scenario`` and ``replication``, the client's ``client_class``,
    ``cut_off`` (it failed at least once), ``cut_off_s`` (first failure to recovery),
    ``unavailable_s`` (time without a working apiserver, from the availability table)
    and ``lost_requests`` (its requests that failed from the fault on). With ``cells``
    (:attr:`Matrix.cells`), each row also gets its cell's columns (``mode``, ``group``...).
    """
    runs = results.runs
    ok = runs[runs["status"] == "ok"][["run_id", "scenario", "replication"]]
    fo = results["failovers"]
    if fo.empty or "client" not in fo:
        return pd.DataFrame(columns=["run_id", "scenario", "replication", "client",
                                     "client_class", "latency_s", "cut_off", "cut_off_s",
                                     "lost_requests"])
    av = results["availability"][["run_id", "client", "client_class", "available_s",
                                  "observed_s"]]
    df = ok.merge(fo, on="run_id").merge(av, on=["run_id", "client"], how="left")
    # Time without an apiserver; before the fault every client of these runs had one.
    df["unavailable_s"] = df["observed_s"] - df["available_s"]
    df["cut_off"] = df["latency_s"] > 0
    df["cut_off_s"] = np.where(df["cut_off"], df["recovered_at"] - df["first_failure_at"], 0.0)
    req = results["requests"]
    if not req.empty and "outcome" in req:
        bad = req[req["outcome"] != "ok"][["run_id", "client", "end"]]
        m = df[["run_id", "client", "fault_at"]].merge(bad, on=["run_id", "client"])
        m = m[m["end"] >= m["fault_at"]]
        lost = m.groupby(["run_id", "client"]).size().rename("lost_requests")
        df = df.merge(lost, on=["run_id", "client"], how="left")
        df["lost_requests"] = df["lost_requests"].fillna(0).astype(int)
    else:
        df["lost_requests"] = 0
    if cells is not None:
        extra = ["scenario", *[c for c in cells.columns if c not in df.columns]]
        df = df.merge(cells[extra], on="scenario", how="left")
    return df


def impact(results: Any, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per successful run: its cell (``mode``, ``fault``... from ``cells``) and

    - ``clients`` and ``clients_cut_off``: clients the fault left running, and those of
      them that failed at least once; ``never_recovered``: of those, still failing at
      the end;
    - ``node_latency_p50_s``/``_p95_s``/``_max_s``: failover latency (fault to the first
      successful request again) of the cut-off clients on worker nodes (kubelet and
      kube-proxy), never-recovered ones excluded (NaN when none);
    - ``not_ready_nodes``/``not_ready_node_s``: nodes that went NotReady although the
      fault left them running, and their NotReady node-seconds;
    - ``lost_requests``: failed requests of those clients from the fault on;
    - ``client_time_lost``: the share of those clients' time from the fault to the end
      of the run that they spent without a working apiserver (0 to 1).
    """
    v = victims(results)
    runs = results.runs
    ok = runs[runs["status"] == "ok"][["run_id", "scenario", "replication", "duration_s"]]
    ns = results["node_status"]
    down = _fault_hosts(results["state_changes"])
    rows = []
    for run in ok.itertuples(index=False):
        rid = str(run.run_id)
        mine = v[v["run_id"] == rid]
        node = mine[mine["client_class"].isin(NODE_CLASSES) & mine["cut_off"]]
        lat = node["latency_s"].to_numpy(dtype=float)
        fin = lat[np.isfinite(lat)]
        nsr = ns[(ns["run_id"] == rid) & ~ns["host"].isin(down.get(rid, set()))] \
            if "host" in ns else ns.iloc[0:0]
        rows.append({
            "run_id": rid, "scenario": run.scenario, "replication": run.replication,
            "clients": len(mine), "clients_cut_off": int(mine["cut_off"].sum()),
            "never_recovered": int(np.isinf(mine["latency_s"]).sum()),
            "node_latency_p50_s": float(np.median(fin)) if len(fin) else math.nan,
            "node_latency_p95_s": float(np.percentile(fin, 95)) if len(fin) else math.nan,
            "node_latency_max_s": float(fin.max()) if len(fin) else math.nan,
            "not_ready_nodes": int(nsr["host"].nunique()) if len(nsr) else 0,
            "not_ready_node_s": float(nsr["duration_s"].sum()) if len(nsr) else 0.0,
            "lost_requests": int(mine["lost_requests"].sum()),
            "client_time_lost": _time_lost(mine, float(run.duration_s)),
        })
    out = pd.DataFrame(rows)
    if cells is not None and len(out):
        out = out.merge(cells, on="scenario", how="left")
    return out


def _time_lost(mine: pd.DataFrame, duration: float) -> float:
    if mine.empty:
        return 0.0
    after = duration - float(mine["fault_at"].iloc[0])
    if after <= 0:
        return math.nan
    return float(mine["unavailable_s"].clip(lower=0).sum()) / (len(mine) * after)


def rank_modes(per_run: pd.DataFrame, victims_df: pd.DataFrame,
               cells: pd.DataFrame) -> pd.DataFrame:
    """The modes ranked, best first, over every fault of the matrix and replication.

    Rank: the share of client time lost after a fault (``client_time_lost``, the mean
    over faults), lowest first. Other columns: ``faults`` (cells),
    ``nodes NotReady per fault`` (mean bystander nodes), ``never recovered (%)`` (of the
    clients the faults left running), ``p95 failover of node clients (s)`` (pooled over
    the cut-off kubelets and kube-proxies of worker nodes that recovered),
    ``lost requests per fault`` and ``worst fault`` (the most client time lost).
    """
    v = victims_df if "mode" in victims_df else victims_df.merge(cells[["scenario", "mode"]],
                                                                   on="scenario")
    rows = []
    for mode, g in per_run.groupby("mode", sort=False):
        vm = v[v["mode"] == mode]
        node = vm[vm["client_class"].isin(NODE_CLASSES)]
        cut = node[node["cut_off"]]
        lat = cut["latency_s"].to_numpy(dtype=float)
        fin = lat[np.isfinite(lat)]
        by_fault = g.groupby("fault", sort=False)[
            ["client_time_lost", "not_ready_nodes", "lost_requests"]].mean()
        rows.append({
            "mode": mode,
            "client time lost (%)": 100 * float(by_fault["client_time_lost"].mean()),
            "nodes NotReady per fault": float(by_fault["not_ready_nodes"].mean()),
            "never recovered (%)": 100 * float(np.isinf(vm["latency_s"]).mean()),
            "p95 failover of node clients (s)":
                float(np.percentile(fin, 95)) if len(fin) else math.nan,
            "lost requests per fault": float(by_fault["lost_requests"].mean()),
            "worst fault": str(by_fault["client_time_lost"].idxmax()),
            "faults": int(len(by_fault)),
        })
    df = pd.DataFrame(rows).sort_values(["client time lost (%)", "nodes NotReady per fault"],
                                        kind="stable").reset_index(drop=True)
    df.index = pd.RangeIndex(1, len(df) + 1, name="rank")
    return df


def latency_by_class(victims_df: pd.DataFrame, by: Sequence[str] = ("mode", "group")
                     ) -> pd.DataFrame:
    """Failover latency per client class and ``by`` (columns of the victims joined with
    the matrix's cells): ``clients``, ``cut_off``, ``never`` (cut off and never back),
    and ``p50_s``/``p95_s``/``max_s`` of the cut-off clients that got back (NaN when
    none)."""
    rows = []
    for key, g in victims_df.groupby([*by, "client_class"], sort=False):
        lat = g.loc[g["cut_off"], "latency_s"].to_numpy(dtype=float)
        fin = lat[np.isfinite(lat)]
        row = dict(zip([*by, "client_class"], key, strict=True))
        row.update({
            "clients": len(g), "cut_off": int(g["cut_off"].sum()),
            "never": int(np.isinf(lat).sum()),
            "p50_s": float(np.median(fin)) if len(fin) else math.nan,
            "p95_s": float(np.percentile(fin, 95)) if len(fin) else math.nan,
            "max_s": float(fin.max()) if len(fin) else math.nan,
        })
        rows.append(row)
    return pd.DataFrame(rows)
