"""The ``hasim`` command line (docs/interfaces.md). Exit codes: 0 ok, 2 bad input, 1 internal
error."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hasim.errors import HasimError, ScenarioError, exit_status

if TYPE_CHECKING:
    from hasim.spec.scenario import Scenario


def _cluster_and_rules(path: str, rules: str | None) -> tuple[object, str]:
    from hasim.kubespray.endpoints import DEFAULT_RULES, get_rules
    from hasim.spec.scenario import cluster_from_inventory, load_scenario, looks_like_scenario

    p = Path(path)
    if not p.exists():
        raise ScenarioError("path does not exist", file=path)
    if looks_like_scenario(p):
        scenario = load_scenario(p)
        name = rules or scenario.rules
        get_rules(name, path)
        return scenario, name
    name = rules or DEFAULT_RULES
    get_rules(name, path)
    return cluster_from_inventory(p, source=str(p), field="inventory"), name


def cmd_endpoints(args: argparse.Namespace) -> int:
    """Print every host's apiserver and etcd endpoints (or, with --diff, where two rule
    sets disagree); warnings go to stderr and, with --format json, into the document."""
    from hasim.kubespray.endpoints import endpoint_warnings, evaluate_endpoints

    if args.diff:
        return _endpoints_diff(args)
    subject, rules = _cluster_and_rules(args.path, args.rules)
    cluster = getattr(subject, "cluster", subject)
    eps = evaluate_endpoints(cluster, rules)
    warnings = endpoint_warnings(cluster, rules)
    for w in warnings:
        print(f"hasim: warning: {w}", file=sys.stderr)
    if args.format == "json":
        doc = {"rules": rules, "hosts": {h: e.as_dict() for h, e in eps.items()},
               "warnings": warnings}
        print(json.dumps(doc, indent=2))
        return 0
    rows = [("HOST", "ROLES", "APISERVER", "ETCD", "/etc/hosts", "LOCAL LB")]
    for h, e in eps.items():
        lb = e.local_balancer
        rows.append(
            (
                h,
                ",".join(e.roles),
                e.apiserver or "-",
                ",".join(e.etcd) or "-",
                "; ".join(e.etc_hosts) or "-",
                f"{lb.kind} {','.join(lb.listen)} -> {len(lb.backends)}" if lb else "-",
            )
        )
    print(f"rules: {rules}")
    _print_table(rows)
    return 0


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _endpoints_diff(args: argparse.Namespace) -> int:
    """Only the host/field cells where two rule sets disagree; exit 0 either way."""
    from hasim.kubespray.endpoints import diff_endpoints, endpoint_warnings, get_rules

    rules_a, rules_b = args.diff
    subject, _ = _cluster_and_rules(args.path, rules_a)
    get_rules(rules_b, args.path)  # the cluster is read once, both names checked
    cluster = getattr(subject, "cluster", subject)
    diff = diff_endpoints(cluster, rules_a, rules_b)
    for rules in (rules_a, rules_b):
        for w in endpoint_warnings(cluster, rules):
            print(f"hasim: warning: {rules}: {w}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps({"rules": [rules_a, rules_b], "hosts": diff}, indent=2))
        return 0
    if not diff:
        print(f"{rules_a} and {rules_b} agree on every host")
        return 0

    def cell(value: object) -> str:
        if isinstance(value, dict):  # a local LB
            return f"{value['kind']} {','.join(value['listen'])} -> {','.join(value['backends'])}"
        if isinstance(value, list):
            return ",".join(str(v) for v in value) or "-"
        return "-" if value is None else str(value)

    rows: list[tuple[str, ...]] = [("HOST", "FIELD", rules_a, rules_b)]
    for host, fields in diff.items():
        for name, values in fields.items():
            rows.append((host, name, cell(values[rules_a]), cell(values[rules_b])))
    _print_table(rows)
    return 0


def cmd_assess(args: argparse.Namespace) -> int:
    """Assess an inventory: every layout under the same faults, the verdict, the change."""
    from hasim.assessment.assess import assess, summary_text

    a = assess(args.path, rules=args.rules, kubernetes_version=args.kubernetes_version,
               faults=args.faults, reps=args.reps, out=args.out, executor=args.executor,
               jobs=args.jobs, scheduler=args.scheduler, tuning=not args.no_tuning,
               progress=False if args.quiet else None)
    for w in a.warnings:
        print(f"hasim: warning: {w}", file=sys.stderr)
    print(summary_text(a))
    return 0


def cmd_topology(args: argparse.Namespace) -> int:
    """Summarise the topology; audit it and draw it on request."""
    from hasim.graph.audit import audit, format_audit
    from hasim.graph.topology import build_topology
    from hasim.graph.topology import hosts as graph_hosts

    subject, rules = _cluster_and_rules(args.path, args.rules)
    g = build_topology(subject, rules)
    counts: dict[str, int] = {}
    for _, d in g.nodes(data=True):
        counts[d["component"]] = counts.get(d["component"], 0) + 1
    hosts = len(graph_hosts(g))
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"topology of {args.path} ({rules}): {hosts} hosts, {g.number_of_nodes()} components,"
          f" {g.number_of_edges()} connections")
    print(f"  {summary}")
    if args.audit:
        print()
        print(format_audit(audit(g)))
    if args.draw:
        from hasim.graph.draw import draw_topology

        out = draw_topology(g, args.draw)
        print(f"\ndrawing written to {out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate scenario files: exit 0 when all are valid, 2 when any is not.

    Every file is checked and each invalid one gets one line on stderr. Beyond the schema,
    the cluster must give every host its endpoints and a topology (a master exists, the
    external LB map has an address, ...), under each sweep value too.
    """
    failed = 0
    for path in args.scenarios:
        try:
            s = _validate_one(path)
        except HasimError as exc:
            print(f"hasim: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: ok ({s.name}: {len(s.cluster.hosts)} hosts, {len(s.spec.faults)} faults)")
    return 2 if failed else 0


def _validate_one(path: str) -> Scenario:
    from hasim.batches.batch import check_scenario
    from hasim.spec.scenario import load_scenario

    s = load_scenario(path)
    check_scenario(s)
    return s


def cmd_schema(args: argparse.Namespace) -> int:
    """Print (or write) the JSON Schema of scenario files."""
    from hasim.spec.schema import schema_json

    text = schema_json()
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"schema written to {args.out}")
    else:
        print(text)
    return 0


def _no_inventories(paths: Sequence[str]) -> None:
    """An inventory given to ``hasim run`` is a mistake with a known fix: say it."""
    from hasim.spec.scenario import looks_like_inventory

    for path in paths:
        p = Path(path)
        if p.exists() and looks_like_inventory(p):
            raise ScenarioError(
                "is an Ansible inventory, not a scenario: to see what failures do to this "
                f"cluster run `hasim assess {path}`; to simulate it with your own faults, "
                f"write a scenario with `cluster: {{inventory: {path}}}` (docs/scenarios.md)",
                file=path)


def cmd_run(args: argparse.Namespace) -> int:
    """Run a batch; exit 1 when a run raised (its error is in runs.parquet), else 0."""
    from hasim.batches.batch import parse_set, plan, run_batch
    from hasim.batches.results import ResultStore
    from hasim.batches.summarize import format_summary, write_summary

    _no_inventories(args.scenarios)
    overrides = parse_set(args.set or [])
    if args.dry_run:
        tasks = plan(args.scenarios, args.reps, overrides)
        store = ResultStore(Path(args.out)) if args.out else None
        done = sum(1 for t in tasks if store is not None and store.marker(t.run_id) is not None)
        print(f"{len(tasks)} runs ({done} already done in {args.out})" if store
              else f"{len(tasks)} runs")
        for t in tasks:
            print(f"  {t.run_id}  {t.name}  {t.point and _label(t.point) or 'base'}  "
                  f"rep {t.replication}  seed {t.seed}")
        return 0
    executor = "dask" if args.scheduler else args.executor
    runs = run_batch(args.scenarios, out=args.out, reps=args.reps, executor=executor,  # type: ignore[arg-type]
                     scheduler=args.scheduler, jobs=args.jobs, overrides=overrides,
                     requests=not args.no_requests, fresh=args.fresh,
                     progress=False if args.quiet else True)
    out = Path(runs.attrs["out"])
    path, summary = write_summary(out)
    errors = runs[runs["status"] != "ok"]
    if not args.quiet:
        print(format_summary(summary))
    print(f"{len(runs)} runs in {out}/: runs.parquet, {path.name}, one Parquet file per run "
          "and table; plots: hasim plot " + str(out))
    if len(errors):
        for row in errors.head(5).itertuples():
            print(f"hasim: run {row.run_id} ({row.scenario} {row.point} rep {row.replication})"
                  f" failed: {row.error}", file=sys.stderr)
        print(f"hasim: {len(errors)} of {len(runs)} runs failed (see the error column of "
              f"{out}/runs.parquet)", file=sys.stderr)
        return 1
    return 0


def _label(point: dict[str, object]) -> str:
    from hasim.batches.batch import point_label

    return point_label(point)


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw the standard figures of a result directory."""
    from hasim.analysis.plots import plot_results

    src = Path(args.directory)
    if not (src / "runs.parquet").exists():
        raise ScenarioError("no runs.parquet here: give a directory written by hasim run",
                            file=str(src))
    out = Path(args.out) if args.out else src / "plots"
    files = plot_results(src, out)
    print(f"{len(files)} figures in {out}/: " + ", ".join(f.name for f in files))
    return 0


def cmd_render_config(args: argparse.Namespace) -> int:
    """Print (or write) the nginx.conf / haproxy.cfg of one host's load balancer."""
    from hasim.graph.render import render_config
    from hasim.spec.scenario import load_scenario

    try:
        name, text = render_config(load_scenario(args.scenario), args.host)
    except ScenarioError as exc:
        if exc.file is None:  # the renderer knows the host, not the file it came from
            raise ScenarioError(exc.problem, file=args.scenario, field=exc.field) from None
        raise
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            out = out / name
        out.write_text(text)
        print(f"{name} of {args.host} written to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    """The real nginx/HAProxy of a scenario on loopback vs the simulator (docs/lab.md)."""
    from hasim.lab import run_lab
    from hasim.spec.scenario import load_scenario

    if args.trials < 1:
        raise HasimError("--trials must be at least 1")
    run_lab(load_scenario(args.scenario), args.trials, args.out, sim_trials=args.sim_trials)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "render-config": cmd_render_config,
    "lab": cmd_lab,
    "endpoints": cmd_endpoints,
    "topology": cmd_topology,
    "validate": cmd_validate,
    "run": cmd_run,
    "assess": cmd_assess,
    "plot": cmd_plot,
    "schema": cmd_schema,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hasim",
        description="Simulate the high availability of Kubernetes control-plane access "
        "as kubespray deploys it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("endpoints", help="every host's apiserver and etcd endpoints")
    p.add_argument("path", help="a scenario file or an Ansible inventory (file or directory)")
    p.add_argument("--rules", help="rule set (default: the scenario's, else ha-mode-2016)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--diff", nargs=2, metavar=("RULES_A", "RULES_B"),
                   help="show only the host/field cells where two rule sets disagree")

    p = sub.add_parser("assess", help="your inventory: every HA layout under the same faults, "
                       "the verdict and the change to make",
                       description="Simulate the cluster of PATH (an Ansible inventory or a "
                       "scenario) under every access layout kubespray offers, each facing "
                       "the same faults; rank them, recommend one, tune its timers, and "
                       "write DIR/report.html, assessment.json, recommended-vars.yml and the "
                       "batch's tables (docs/assess.md). Rerunning resumes.")
    p.add_argument("path", help="an Ansible inventory (file or directory) or a scenario file")
    p.add_argument("--rules", help="rule set (default: kubespray-2026-01 for an inventory "
                   "with kube_control_plane, else ha-mode-2016; a scenario's own)")
    p.add_argument("--kubernetes-version", metavar="X.Y",
                   help="client behaviour of this version (default: kube_version)")
    p.add_argument("--faults", metavar="KIND,...",
                   help="fault kinds: crash, poweroff, partition, lb, etcd (default: all)")
    p.add_argument("--reps", type=int, default=5, metavar="N", help="replications (5)")
    p.add_argument("--out", metavar="DIR", help="default results/assess-<name>")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", "-j", type=int, metavar="N", help="worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler")
    p.add_argument("--executor", choices=["serial", "process", "dask"], default="process")
    p.add_argument("--no-tuning", action="store_true", help="skip the timer sweep")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    p = sub.add_parser("topology", help="the component graph, its audit and drawing")
    p.add_argument("path", help="a scenario file or an Ansible inventory (file or directory)")
    p.add_argument("--rules", help="rule set (default: the scenario's, else ha-mode-2016)")
    p.add_argument("--audit", action="store_true", help="list single points of failure")
    p.add_argument("--draw", metavar="FILE.png", help="draw the layered topology")

    p = sub.add_parser("validate", help="check scenario files")
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO")

    p = sub.add_parser("run", help="run scenarios x sweep points x replications, store tables",
                       description="Run every scenario x sweep point x replication. Results "
                       "go to DIR (default results/<scenario name>): runs.parquet, one "
                       "Parquet file per run and table, summary.csv. Rerunning the same "
                       "command after an interruption computes only the missing runs.")
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    p.add_argument("--reps", type=int, metavar="N",
                   help="replications per sweep point (default: the scenario's)")
    p.add_argument("--out", metavar="DIR", help="result directory")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", "-j", type=int, metavar="N",
                       help="worker processes (default: all cores)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on this Dask cluster (tcp://host:port); implies --executor dask")
    p.add_argument("--executor", choices=["serial", "process", "dask"], default="process",
                   help="serial, local processes (default), or Dask (a LocalCluster unless "
                   "--scheduler)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a dotted key before the sweep (value read as YAML); repeat")
    p.add_argument("--no-requests", action="store_true",
                   help="do not store the per-request table (the biggest)")
    p.add_argument("--fresh", action="store_true", help="recompute runs already done")
    p.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no table")

    p = sub.add_parser("plot", help="the standard figures of a result directory (PNG)")
    p.add_argument("directory", metavar="DIR", help="a directory written by hasim run")
    p.add_argument("--out", metavar="DIR", help="where the PNGs go (default: DIR/plots)")

    p = sub.add_parser("render-config", help="the real nginx.conf / haproxy.cfg of a host")
    p.add_argument("scenario", metavar="SCENARIO")
    p.add_argument("--host", required=True, metavar="NAME",
                   help="a host with a load balancer (a node, or extlbN for the external one)")
    p.add_argument("--out", metavar="FILE|DIR", help="write it there instead of printing it")

    p = sub.add_parser("lab", help="real nginx/HAProxy on loopback vs the simulator",
                       description="Run the scenario's load balancer for real (root; nginx, "
                       "HAProxy, iproute2, iptables) in front of stub apiservers in a network "
                       "namespace, fault the masters for real, and compare with the simulator "
                       "(docs/lab.md).")
    p.add_argument("scenario", metavar="SCENARIO")
    p.add_argument("--trials", type=int, default=5, metavar="N", help="real trials (5)")
    p.add_argument("--sim-trials", type=int, default=None, metavar="N",
                   help="simulated trials (default 100)")
    p.add_argument("--out", default="results/lab", metavar="DIR",
                   help="where lab.parquet, lab-summary.csv and lab.png go")

    p = sub.add_parser("schema", help="the JSON Schema of scenario files")
    p.add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hasim`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return exit_status(lambda: COMMANDS[args.command](args))
    except KeyboardInterrupt:
        print("hasim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
