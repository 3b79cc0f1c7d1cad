"""The 2016 HA document's claims, each set against what the model finds (notebook 01).

:func:`doc_claims` takes a fault matrix's results (``hasim.analysis.compare``: its cells,
per-run impact and victims) and, for each claim of kubespray's ``docs/ha-mode.md`` whose
modes the matrix holds, says what the model finds and whether they agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hasim.analysis.report import fmt
from hasim.batches.summarize import per_run as figures_per_run

DEFAULT = "default (no LB)"
OLD_EXTERNAL, NEW_EXTERNAL = "external HAProxy, 2016 example", "external HAProxy, 2020 fix"
VIP = "external HAProxy + keepalived VIP"
EVERY_NODE = "external HAProxy on every node"
LOCAL_NGINX = "local nginx"


def doc_claims(results: Any, cells: pd.DataFrame, per_run: pd.DataFrame, vic: pd.DataFrame,
               cluster: Any) -> pd.DataFrame:
    """One row per claim: ``the doc says``, ``the model finds``, ``agree?``. ``cluster`` is
    the matrix's cluster (every mode runs the same one)."""
    modes = list(dict.fromkeys(cells["mode"]))
    faults = list(dict.fromkeys(cells["fault"]))
    masters = list(cluster.members("kube-master"))
    workers = len(cluster.members("kube-node"))
    nodes_total = len(cluster.hosts)  # every host runs a kubelet: masters too
    det = results["detections"].merge(results.runs[["run_id", "scenario"]]).merge(cells)
    m_nodes = per_run.groupby(["mode", "fault"])["not_ready_nodes"].mean()
    rows: list[dict[str, str]] = []

    def row(claim: str, evidence: str, agrees: bool) -> None:
        rows.append({"the doc says": claim, "the model finds": evidence,
                     "agree?": "yes" if agrees else "**no**"})

    def faults_on(mode: str, role: str) -> list[str]:
        return [f for f in faults if cells[(cells["mode"] == mode) & (cells["fault"] == f)
                                           ]["target_role"].eq(role).any()]

    if DEFAULT in modes:
        m0 = masters[0]
        others = [f for f in faults if f.endswith(tuple(masters[1:]))]
        hit = m_nodes.loc[(DEFAULT, f"crash {m0}")] if (DEFAULT, f"crash {m0}") in m_nodes \
            else np.nan
        spared = max(m_nodes.loc[(DEFAULT, f)] for f in others if (DEFAULT, f) in m_nodes)
        row("By default only a non-HA endpoint is configured: the first master.",
            f"crash of {m0}: {fmt(hit)} of the {workers} workers NotReady; of any other "
            f"master: {fmt(spared)}", hit >= workers and spared == 0)

    if OLD_EXTERNAL in modes and NEW_EXTERNAL in modes:
        m_faults = faults_on(OLD_EXTERNAL, "master")
        old_det = det[(det["mode"] == OLD_EXTERNAL) & det["fault"].isin(m_faults)]
        new_det = det[(det["mode"] == NEW_EXTERNAL) & det["fault"].isin(m_faults)]
        lost_old = per_run[(per_run["mode"] == OLD_EXTERNAL) & per_run["fault"].isin(m_faults)]
        lost_new = per_run[(per_run["mode"] == NEW_EXTERNAL) & per_run["fault"].isin(m_faults)]
        dt = 100 * (lost_old["client_time_lost"].mean() - lost_new["client_time_lost"].mean())
        crash = new_det.loc[new_det["fault_kind"] == "crash", "detect_s"].median()
        poweroff = new_det.loc[new_det["fault_kind"] == "poweroff", "detect_s"].median()
        row("The example HAProxy (servers listed without `check`) is the external LB to use.",
            f"it never marks a dead master down ({len(old_det)} detections in "
            f"{len(lost_old)} master-fault runs; with `check`: {len(new_det)}, a median "
            f"{fmt(crash, 's')} after a crash and {fmt(poweroff, 's')} after a power-off): "
            f"a dead master stays in rotation (kubespray #5663), and every new connection "
            f"lands on it 1 time in {len(masters)}. For these clients it costs only "
            f"{fmt(dt)} percentage points of client time over the fix: kubelets and "
            f"kube-proxies keep their connections for minutes, and a redial that hits the "
            f"dead master is retried on the next one.", len(old_det) > 0)

    single = [m for m in (OLD_EXTERNAL, NEW_EXTERNAL) if m in modes]
    if single and VIP in modes:
        lb_f = faults_on(VIP, "LB")
        s_nodes = max(m_nodes.loc[(single[0], f)] for f in lb_f if (single[0], f) in m_nodes)
        v_nodes = max(m_nodes.loc[(VIP, f)] for f in lb_f if (VIP, f) in m_nodes)
        moves = results["vip_moves"].merge(results.runs[["run_id", "scenario"]]).merge(cells)
        row("The HAProxy service should itself be HA and requires VIP management.",
            f"one HAProxy instance down: {fmt(s_nodes)} of {nodes_total} nodes NotReady; "
            f"behind a keepalived VIP: {fmt(v_nodes)} (the VIP moved after a median "
            f"{fmt(moves['takeover_s'].median(), 's')})", s_nodes > v_nodes)

    if EVERY_NODE in modes:
        e = vic[vic["mode"] == EVERY_NODE]
        e_lost = 100 * per_run[per_run["mode"] == EVERY_NODE]["client_time_lost"].mean()
        never_hosts = set(e.loc[np.isinf(e["latency_s"]), "host"])
        lb_targets = set(cells[(cells["mode"] == EVERY_NODE)
                               & (cells["target_role"] == "LB")]["target"])
        row("HAProxy on every node achieves HA for the HAProxy instances and needs no VIP.",
            f"client time lost {fmt(e_lost)} % per fault; clients that never got back: on "
            f"{', '.join(sorted(never_hosts)) or 'no host'} (the node whose own HAProxy "
            f"died: {', '.join(sorted(lb_targets)) or '-'}); no VIP involved",
            never_hosts <= lb_targets)

    if LOCAL_NGINX in modes and NEW_EXTERNAL in modes:
        summ = figures_per_run(results).merge(cells, on="scenario")
        ng = summ[summ["mode"] == LOCAL_NGINX]["checks_per_apiserver_s"].mean()
        ex = summ[summ["mode"] == NEW_EXTERNAL]["checks_per_apiserver_s"].mean()
        row("The localhost (nginx) LB is less efficient than a dedicated LB because it "
            "creates extra health checks on the apiserver.",
            f"nginx sends {fmt(ng)} checks per apiserver per second (it has no active "
            f"checks; it only re-probes a dead server on a new connection); the external "
            f"HAProxy with `check`: {fmt(ex)}. Notebook 02 measures this against cluster "
            "size.", ng > ex)
    return pd.DataFrame(rows)
