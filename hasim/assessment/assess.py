"""``hasim assess``: from a user's own inventory to a verdict and the change to make.

One call (docs/assess.md):

1. reads the cluster as it is (:func:`load_subject`): hosts, groups, variables, and the
   timers kubespray reads from them (:mod:`hasim.kubespray.knobs`);
2. lists the layouts kubespray offers for the rule set (:mod:`hasim.assessment.layouts`), the
   current one among them;
3. simulates every layout under the same faults (:func:`fault_plan`), common random
   numbers across layouts, ``reps`` replications, through :func:`hasim.run_batch` and
   its store (an interrupted assessment resumes);
4. reaches the verdict (:mod:`hasim.assessment.verdict`) and tunes the recommended layout's timers
   (:mod:`hasim.assessment.tuning`);
5. writes ``assessment.json``, ``recommended-vars.yml``, the rendered LB configuration and
   ``report.html`` (:mod:`hasim.assessment.report`) next to the batch's tables.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hasim.analysis.compare import held_past
from hasim.assessment.layouts import Layout, classify, layouts_for
from hasim.assessment.verdict import Standing, cell_table, rank, recommend, run_figures, standings
from hasim.errors import HasimError, ScenarioError
from hasim.graph.audit import audit
from hasim.graph.topology import build_topology
from hasim.kubespray.cluster import Cluster
from hasim.kubespray.endpoints import endpoint_warnings, evaluate_endpoints, get_rules
from hasim.kubespray.knobs import Knobs, read_knobs
from hasim.spec.scenario import (
    Scenario,
    _set_dotted,
    cluster_from_inventory,
    load_scenario,
    looks_like_scenario,
    scenario_from_dict,
)

#: ``--faults`` kinds: faults of a master (the first and another one), the loss of a load
#: balancer, the loss of an etcd member.
FAULT_KINDS = ("crash", "poweroff", "partition", "lb", "etcd")
FAULT_AT = "60s"
#: Five minutes after the fault: past the grace period, the HTTP/2 check and an election.
RUN_DURATION = "6m"
#: Clusters with more worker nodes than this run with sampled clients (docs/performance.md).
SAMPLE_ABOVE = 100
#: A crashed local LB (a static pod) is restarted by the kubelet after this back-off.
LOCAL_LB_RESTART = "10s"
SAMPLED_NODES = 20


@dataclass(frozen=True)
class Subject:
    """What is assessed: its cluster, rule set and the scenario data every run starts from."""

    name: str
    source: str
    rules: str
    cluster: Cluster
    #: Scenario data without faults, balancers or sweep (cluster spec, knobs already set).
    base: dict[str, Any]
    #: Where a relative inventory path of ``base`` is anchored (a scenario file), if any.
    anchor: str | None
    #: The inventory path when the subject is one (recommended-vars.yml belongs there).
    inventory: Path | None


def load_subject(path: str | os.PathLike[str], rules: str | None = None) -> Subject:
    """An inventory (file or directory) or a scenario file, read as ``hasim endpoints``
    reads it. Errors name the path and the problem."""
    p = Path(path)
    if not p.exists():
        raise ScenarioError("path does not exist", file=str(p))
    if looks_like_scenario(p):
        sc = load_scenario(p)
        name = rules or sc.rules
        get_rules(name, str(p))
        base = {k: copy.deepcopy(v) for k, v in sc.raw.items()
                if k not in {"faults", "balancers", "sweep", "name", "replications"}}
        base.setdefault("cluster", {})["rules"] = name
        inv = sc.spec.cluster.inventory
        inv_path = (p.parent / inv).resolve() if inv else None
        return Subject(sc.name, str(p), name, sc.cluster, base, str(p), inv_path)
    name = rules or ("kubespray-2026-01" if _underscore_groups(p) else "ha-mode-2016")
    get_rules(name, str(p))
    cluster = cluster_from_inventory(p.resolve(), source=str(p), field="inventory")
    base = {"cluster": {"inventory": str(p.resolve()), "rules": name}}
    stem = p.resolve().name if p.is_dir() else p.resolve().parent.name
    return Subject(stem, str(p), name, cluster, base, None, p.resolve())


def _underscore_groups(p: Path) -> bool:
    # With no --rules, an inventory in today's spelling is read with today's rules.
    text = p.read_text(errors="replace") if p.is_file() else "".join(
        f.read_text(errors="replace") for f in sorted(p.iterdir())
        if f.is_file() and f.suffix in {"", ".ini", ".yml", ".yaml", ".cfg"})
    return "kube_control_plane" in text


@dataclass(frozen=True)
class Fault:
    """One fault of the plan: its label, ``--faults`` kind and the scenario fault."""

    label: str
    kind: str
    target: str
    spec: dict[str, Any]


def fault_plan(scenario: Scenario, kinds: Sequence[str]) -> list[Fault]:
    """The faults a layout faces: crash, power-off and partition of the first master and
    of another one; the loss of its LB (the first node's local LB process, or the VIP
    holder of an external pair); the crash of the first etcd member. Held to the end."""
    masters = scenario.cluster.members("kube-master")
    hold = held_past(RUN_DURATION)
    out: list[Fault] = []
    for m in masters[:2]:
        for kind in ("crash", "poweroff", "partition"):
            if kind not in kinds:
                continue
            spec: dict[str, Any] = {"at": FAULT_AT, "target": m, "kind": kind, "duration": hold}
            if kind == "partition":
                spec["peers"] = "all"
            out.append(Fault(f"{kind} {m}", kind, m, spec))
    if "lb" in kinds:
        g = build_topology(scenario)
        ext = sorted({d["host"] for _, d in g.nodes(data=True)
                      if d["component"] == "external-lb" and not d.get("virtual")
                      and not scenario.cluster.has_host(d["host"])})
        local = [d["host"] for _, d in g.nodes(data=True) if d["component"] == "lb"]
        nodes = [h for h in scenario.cluster.members("kube-node") if h in local]
        if ext:
            for kind in ("crash", "poweroff"):
                out.append(Fault(f"{kind} {ext[0]}", "lb", ext[0],
                                 {"at": FAULT_AT, "target": ext[0], "kind": kind,
                                  "duration": hold}))
        elif nodes:
            # kubespray runs the local LB as a static pod: the kubelet restarts it after
            # its first crash back-off, 10 s (kubelet's backOffPeriod).
            out.append(Fault(f"lb-crash {nodes[0]}", "lb", nodes[0],
                             {"at": FAULT_AT, "target": nodes[0], "kind": "lb-crash",
                              "duration": LOCAL_LB_RESTART}))
    if "etcd" in kinds:
        eps = evaluate_endpoints(scenario)
        member = next((h for h, e in eps.items() if e.etcd_member), None)
        if member is not None:
            out.append(Fault(f"crash {member}/etcd", "etcd", f"{member}/etcd",
                             {"at": FAULT_AT, "target": f"{member}/etcd", "kind": "crash",
                              "duration": hold}))
    return out


def layout_scenario(subject: Subject, layout: Layout, knobs: Knobs, name: str,
                    overrides: Mapping[str, Any] | None = None,
                    faults: Sequence[Mapping[str, Any]] = (), reps: int = 1) -> Scenario:
    """The subject under ``layout``: its variables over the inventory's, the layout's
    balancers, the cluster's knobs, ``faults``, seed 0 (common random numbers)."""
    raw = copy.deepcopy(subject.base)
    cluster = raw.setdefault("cluster", {})
    cluster["vars"] = {**dict(cluster.get("vars") or {}), **layout.vars}
    raw.update({"name": name, "balancers": copy.deepcopy(layout.balancers),
                "faults": [dict(f) for f in faults], "duration": RUN_DURATION, "seed": 0,
                "replications": reps, "sweep": {}})
    for key, value in knobs.overrides(with_vip=layout.kube_vip).items():
        if key.startswith("balancers.external") and "external" not in layout.balancers:
            continue
        _set_dotted(raw, key, value, subject.anchor)
    nodes = len(subject.cluster.members("kube-node"))
    if nodes > SAMPLE_ABOVE:
        _set_dotted(raw, "sampling.nodes", SAMPLED_NODES, subject.anchor)
        _set_dotted(raw, "sampling.shared_lb", True, subject.anchor)
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value, subject.anchor)
    return scenario_from_dict(raw, subject.anchor)


def spofs_of(scenario: Scenario) -> list[str]:
    """The single points of failure of a layout: components every path of a client class
    passes through, other than the client's own host's (docs/model.md, "Audit")."""
    found: set[str] = set()
    for c in audit(build_topology(scenario), pinned_too=False).classes:
        found |= {s for s in c.spofs if not s.startswith("own ")}
    return sorted(found)


@dataclass
class Assessment:
    """The result of :func:`assess`: the cluster, the layouts, their damage, the verdict.

    ``damage`` is one row per (layout, fault) with each figure's mean and 95 % interval;
    ``runs`` one row per run; ``ranking`` one row per layout; ``tuning`` one row per
    timer setting tried on the recommended layout (empty when tuning was skipped).
    """

    cluster: dict[str, Any]
    current: str
    layouts: list[dict[str, Any]]
    damage: pd.DataFrame
    runs: pd.DataFrame
    ranking: pd.DataFrame
    recommendation: dict[str, Any]
    warnings: list[str]
    knobs: list[dict[str, Any]]
    out: Path
    tuning: pd.DataFrame = field(default_factory=pd.DataFrame)
    endpoints: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def cells(self) -> pd.DataFrame:
        """One row per simulated (layout, fault): ``scenario``, ``layout``, ``fault``,
        ``kind``, ``target``."""
        cells: pd.DataFrame = self.extras["victims_cells"]
        return cells

    def victims(self) -> pd.DataFrame:
        """One row per (run, client the fault left running), with its cell's columns and
        its ``latency_s`` (inf: never back), ``cut_off``, ``unavailable_s``. Read from
        the result directory once; each call gets its own copy."""
        from hasim.analysis.compare import victims
        from hasim.batches.results import load_results

        if "victims" not in self.extras:
            self.extras["victims"] = victims(load_results(self.out), self.cells)
        got: pd.DataFrame = self.extras["victims"]
        return got.copy()

    def to_dict(self) -> dict[str, Any]:
        """The documented ``assessment.json`` (docs/assess.md)."""
        return {
            "cluster": self.cluster,
            "current": self.current,
            "layouts": self.layouts,
            "recommendation": self.recommendation,
            "warnings": list(self.warnings),
            "knobs": self.knobs,
        }

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)

    def to_html(self) -> str:
        from hasim.assessment.report import render_html

        return render_html(self)


def _check_kinds(faults: str | Sequence[str] | None) -> list[str]:
    if faults is None:
        return list(FAULT_KINDS)
    items = [f.strip() for f in (faults.split(",") if isinstance(faults, str) else faults)]
    bad = [f for f in items if f not in FAULT_KINDS]
    if bad or not items:
        raise ScenarioError(f"unknown fault kind {bad[0] if bad else ''!r}; known: "
                            f"{', '.join(FAULT_KINDS)}", file="--faults", field="--faults")
    return items


def plan(subject: Subject, knobs: Knobs, kinds: Sequence[str], reps: int
         ) -> tuple[list[Scenario], pd.DataFrame, list[Layout], dict[str, Scenario]]:
    """Every (layout, fault) scenario, their cells, the layouts and one fault-free
    scenario per layout (for its audit and its rendered configuration)."""
    layouts = layouts_for(subject.rules, subject.cluster)
    scenarios: list[Scenario] = []
    rows: list[dict[str, Any]] = []
    plain: dict[str, Scenario] = {}
    for layout in layouts:
        base = layout_scenario(subject, layout, knobs, f"{subject.name} | {layout.name}")
        plain[layout.name] = base
        for fault in fault_plan(base, kinds):
            name = f"{subject.name} | {layout.name} | {fault.label}"
            scenarios.append(layout_scenario(subject, layout, knobs, name,
                                             faults=[fault.spec], reps=reps))
            rows.append({"scenario": name, "layout": layout.name, "fault": fault.label,
                         "kind": fault.kind, "target": fault.target})
    return scenarios, pd.DataFrame(rows), layouts, plain


def assess(path: str | os.PathLike[str], rules: str | None = None,
           kubernetes_version: str | None = None, faults: str | Sequence[str] | None = None,
           reps: int = 5, out: str | os.PathLike[str] | None = None,
           executor: str = "process", jobs: int | None = None, scheduler: str | None = None,
           tuning: bool = True, progress: bool | None = None) -> Assessment:
    """Assess the cluster at ``path`` (an inventory or a scenario); see
    :mod:`hasim.assessment.assess`.

    Writes ``out`` (default ``results/assess-<name>/``) and returns the
    :class:`Assessment`. Bad input raises :class:`~hasim.errors.HasimError` before
    anything is run.
    """
    from hasim.batches.batch import run_batch
    from hasim.batches.results import load_results

    if reps < 1:
        raise ScenarioError(f"--reps must be at least 1, got {reps}", field="--reps")
    kinds = _check_kinds(faults)
    subject = load_subject(path, rules)
    knobs = read_knobs(subject.cluster, subject.rules, kubernetes_version)
    warnings = list(endpoint_warnings(subject.cluster, subject.rules))
    eps = evaluate_endpoints(subject.cluster, subject.rules)
    current = classify(subject.cluster.with_vars(subject.base["cluster"].get("vars") or {}),
                       subject.rules)
    scenarios, cells, layouts, plain = plan(subject, knobs, kinds, reps)
    if not scenarios:
        raise HasimError("no fault to simulate: --faults selects none for this cluster")
    root = Path(out) if out is not None else Path("results") / f"assess-{_slug(subject.name)}"
    runs = run_batch(scenarios, out=root, executor=executor,  # type: ignore[arg-type]
                     jobs=jobs, scheduler=scheduler, requests=False, progress=progress)
    failed = runs[runs["status"] != "ok"]
    for row in failed.itertuples(index=False):
        warnings.append(f"run {row.run_id} ({row.scenario}) failed: "
                        f"{getattr(row, 'error', 'see runs.parquet')}")
    results = load_results(root)
    figures = run_figures(results, cells)
    damage = cell_table(figures) if len(figures) else pd.DataFrame()
    spofs = {lo.name: spofs_of(plain[lo.name]) for lo in layouts}
    extra = {lo.name: len(lo.extra_hosts) for lo in layouts}
    ranked = rank(standings(figures, spofs, extra))
    ranking = _ranking_frame(ranked)
    masters = subject.cluster.members("kube-master")
    choice, tied, why = recommend(ranked)
    layout_by_name = {lo.name: lo for lo in layouts}
    rec_layout = layout_by_name[choice.layout]
    if len(masters) == 1:
        why = ("this cluster has one master: when it fails, no access layout helps, every "
               "client is cut off until it returns; add masters (three, so that etcd keeps "
               "a quorum when one fails)" + (f"; meanwhile: {why}" if why else ""))
    elif not why:
        why = (f"{choice.layout} does the least damage under these faults"
               + ("" if choice.layout != current else ", and it is the current layout"))
    tune = pd.DataFrame()
    tuning_result: dict[str, Any] = {}
    if tuning:
        from hasim.assessment.tuning import tune_layout

        tune, tuning_result = tune_layout(subject, rec_layout, knobs, root / "tuning",
                                          reps=min(reps, 3), executor=executor, jobs=jobs,
                                          scheduler=scheduler, progress=progress)
    assessment = Assessment(
        cluster=_cluster_doc(subject, knobs, eps),
        current=current,
        layouts=_layouts_doc(layouts, damage, ranked, spofs),
        damage=damage, runs=figures, ranking=ranking,
        recommendation={"layout": choice.layout, "vars": _paste_vars(subject, rec_layout),
                        "file": _vars_file(subject), "tuning": tuning_result, "why": why,
                        "ties": [s.layout for s in tied]},
        warnings=warnings + _layout_warnings(subject, current, knobs), knobs=knobs.as_list(),
        out=root, tuning=tune,
        endpoints={h: e.as_dict() for h, e in eps.items()},
        extras={"layout_objects": layout_by_name, "plain": plain, "victims_cells": cells,
                "results_dir": str(root)},
    )
    write_outputs(assessment)
    return assessment


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-") or "cluster"


def _ranking_frame(ranked: Sequence[tuple[int, Standing]]) -> pd.DataFrame:
    rows = []
    for r, s in ranked:
        row: dict[str, Any] = {"rank": r, "layout": s.layout, "spofs": ", ".join(s.spofs)}
        for f, (m, lo, hi) in s.totals.items():
            row[f], row[f"{f}_lo"], row[f"{f}_hi"] = m, lo, hi
        rows.append(row)
    return pd.DataFrame(rows)


def _cluster_doc(subject: Subject, knobs: Knobs, eps: Mapping[str, Any]) -> dict[str, Any]:
    c = subject.cluster
    nodes = len(c.members("kube-node"))
    return {
        "source": subject.source, "rules": subject.rules,
        "hosts": len(c.hosts), "control_plane": list(c.members("kube-master")),
        "nodes": nodes, "etcd": [h for h, e in eps.items() if e.etcd_member],
        "kubernetes_version": knobs.kubernetes_version, "client_profile": knobs.client_profile,
        "sampled_nodes": SAMPLED_NODES if nodes > SAMPLE_ABOVE else None,
    }


def _layouts_doc(layouts: Sequence[Layout], damage: pd.DataFrame,
                 ranked: Sequence[tuple[int, Standing]], spofs: Mapping[str, list[str]]
                 ) -> list[dict[str, Any]]:
    ranks = {s.layout: r for r, s in ranked}
    out = []
    for lo in layouts:
        mine = damage[damage["layout"] == lo.name] if len(damage) else damage
        faults = []
        for row in mine.to_dict("records"):
            faults.append({"fault": row["fault"], "kind": row["kind"], "target": row["target"],
                           **{f: row[f] for f in ("not_ready_nodes", "client_time_lost_s",
                                                  "p95_failover_s", "never_recovered")}})
        load = [r["checks_per_apiserver_s"]["mean"] for r in mine.to_dict("records")]
        load = [x for x in load if x is not None]
        out.append({"name": lo.name, "title": lo.title, "vars": lo.vars,
                    "extra_hosts": list(lo.extra_hosts), "spofs": spofs.get(lo.name, []),
                    "faults": faults,
                    "checks_per_apiserver_s": round(sum(load) / len(load), 6) if load else None,
                    "rank": ranks.get(lo.name), "note": lo.note})
    return out


def _layout_warnings(subject: Subject, current: str, knobs: Knobs) -> list[str]:
    out = []
    if current.startswith("external") or current == "kube-vip":
        out.append(f"the current layout's load balancer is outside the inventory; hasim "
                   f"simulates it as {current} (docs/assess.md)")
    nodes = len(subject.cluster.members("kube-node"))
    if nodes > SAMPLE_ABOVE:
        out.append(f"{nodes} worker nodes: {SAMPLED_NODES} per class of identical nodes are "
                   "simulated in full, the others in aggregate (counts are estimates; behind "
                   "an external LB or VIP an approximation, docs/performance.md)")
    defaults = [k["name"] for k in knobs.as_list() if k["source"] == "default"]
    if defaults:
        out.append("taken from kubespray's defaults (not set in the inventory): "
                   + ", ".join(defaults))
    return out


def _vars_file(subject: Subject) -> str:
    """The inventory file the recommended group_vars belong in."""
    inv = subject.inventory
    if inv is None:
        return "cluster.vars of the scenario"
    if subject.anchor is None:
        inv = Path(subject.source)  # as the user wrote it
    root = inv if inv.is_dir() else inv.parent
    if (root / "group_vars" / "all").is_dir():
        return str(root / "group_vars" / "all" / "all.yml")
    return str(root / "group_vars" / "all.yml")


def _paste_vars(subject: Subject, layout: Layout) -> dict[str, Any]:
    """The layout's variables that differ from what the inventory has (None: remove)."""
    hosts = subject.cluster.with_vars(subject.base["cluster"].get("vars") or {}).hosts
    out = {}
    for k, v in layout.vars.items():
        have = {repr(h.var(k)) for h in hosts}
        if have != {repr(v)}:
            out[k] = v
    return out


def recommended_vars_yaml(a: Assessment) -> str:
    """The text of ``recommended-vars.yml``."""
    rec = a.recommendation
    keep = {k: v for k, v in rec["vars"].items() if v is not None}
    drop = [k for k, v in rec["vars"].items() if v is None]
    lines = [f"# hasim assess: the {rec['layout']} layout for {a.cluster['source']}",
             f"# paste into {rec['file']}"]
    if drop:
        lines.append("# and remove (wherever the inventory sets them): " + ", ".join(drop))
    grace = (rec.get("tuning") or {}).get("vars") or {}
    keep.update(grace)
    if not keep and not drop:
        lines.append("# nothing to change: the inventory already selects this layout")
    body = yaml.safe_dump(keep, sort_keys=False, default_flow_style=False) if keep else ""
    return "\n".join(lines) + "\n" + body


def write_outputs(a: Assessment) -> None:
    """``assessment.json``, ``recommended-vars.yml``, the LB configuration of one node,
    ``report.html`` and ``damage.csv`` under ``a.out``."""
    from hasim.graph.render import render_config

    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "assessment.json").write_text(a.to_json() + "\n")
    (a.out / "recommended-vars.yml").write_text(recommended_vars_yaml(a))
    a.files["assessment.json"] = str(a.out / "assessment.json")
    a.files["recommended-vars.yml"] = str(a.out / "recommended-vars.yml")
    sc = a.extras["plain"][a.recommendation["layout"]]
    host = _config_host(sc)
    if host is not None:
        name, text = render_config(sc, host)
        (a.out / name).write_text(text)
        a.files[name] = str(a.out / name)
        a.extras["config"] = (host, name, text)
    if len(a.damage):
        flat = a.damage[[c for c in a.damage.columns if not isinstance(a.damage[c].iloc[0], dict)]]
        flat.to_csv(a.out / "damage.csv", index=False)
    (a.out / "report.html").write_text(a.to_html())
    a.files["report.html"] = str(a.out / "report.html")


def _config_host(sc: Scenario) -> str | None:
    g = build_topology(sc)
    for comp in ("lb", "external-lb"):
        hosts = [d["host"] for _, d in g.nodes(data=True)
                 if d["component"] == comp and not d.get("virtual")]
        if hosts:
            return hosts[0]
    return None


def summary_text(a: Assessment) -> str:
    """The terminal summary: current layout, its SPOFs, the worst fault, the
    recommendation and the file to paste."""
    cur = next((lo for lo in a.layouts if lo["name"] == a.current), None)
    lines = [f"cluster {a.cluster['source']}: {a.cluster['hosts']} hosts, "
             f"{len(a.cluster['control_plane'])} control plane, rules {a.cluster['rules']}, "
             f"Kubernetes {a.cluster['kubernetes_version']} ({a.cluster['client_profile']} "
             "clients)"]
    if cur is not None:
        spofs = ", ".join(cur["spofs"]) or "none"
        lines.append(f"current layout: {a.current}; single points of failure: {spofs}")
        worst = max(cur["faults"], key=lambda f: (f["never_recovered"]["mean"] or 0,
                                                   f["not_ready_nodes"]["mean"] or 0,
                                                   f["client_time_lost_s"]["mean"] or 0),
                    default=None)
        if worst is not None:
            lines.append(
                f"worst fault: {worst['fault']}: {_fmt(worst['never_recovered'])} clients "
                f"never back, {_fmt(worst['not_ready_nodes'])} nodes NotReady, "
                f"{_fmt(worst['client_time_lost_s'])} client-seconds lost")
    rec = a.recommendation
    lines.append(f"recommendation: {rec['layout']}: {rec['why']}")
    lines.append(f"the change: {a.files.get('recommended-vars.yml')} (paste into {rec['file']})")
    lines.append(f"report: {a.files.get('report.html')}")
    return "\n".join(lines)


def _fmt(iv: Mapping[str, Any]) -> str:
    m = iv.get("mean")
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "-"
    return f"{m:.3g}"
