"""The ``hasim`` command line (CONTRACT.md). Exit codes: 0 ok, 2 bad input, 1 internal error."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hasim.errors import HasimError, ScenarioError

if TYPE_CHECKING:
    from hasim.scenario import Scenario


def _cluster_and_rules(path: str, rules: str | None) -> tuple[object, str]:
    from hasim.endpoints import DEFAULT_RULES, get_rules
    from hasim.scenario import cluster_from_inventory, load_scenario, looks_like_scenario

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
    """Print every host's apiserver and etcd endpoints."""
    from hasim.endpoints import evaluate_endpoints

    subject, rules = _cluster_and_rules(args.path, args.rules)
    cluster = getattr(subject, "cluster", subject)
    eps = evaluate_endpoints(cluster, rules)
    if args.format == "json":
        doc = {"rules": rules, "hosts": {h: e.as_dict() for h, e in eps.items()}}
        print(json.dumps(doc, indent=2))
        return 0
    rows = [("HOST", "ROLES", "APISERVER", "ETCD", "/etc/hosts")]
    for h, e in eps.items():
        rows.append(
            (
                h,
                ",".join(e.roles),
                e.apiserver or "-",
                ",".join(e.etcd) or "-",
                "; ".join(e.etc_hosts) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"rules: {rules}")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_topology(args: argparse.Namespace) -> int:
    """Summarise the topology; audit it and draw it on request."""
    from hasim.audit import audit, format_audit
    from hasim.topology import build_topology

    subject, rules = _cluster_and_rules(args.path, args.rules)
    g = build_topology(subject, rules)
    counts: dict[str, int] = {}
    for _, d in g.nodes(data=True):
        counts[d["component"]] = counts.get(d["component"], 0) + 1
    hosts = len({d["host"] for _, d in g.nodes(data=True)})
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"topology of {args.path} ({rules}): {hosts} hosts, {g.number_of_nodes()} components,"
          f" {g.number_of_edges()} connections")
    print(f"  {summary}")
    if args.audit:
        print()
        print(format_audit(audit(g)))
    if args.draw:
        from hasim.draw import draw_topology

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
    from hasim.scenario import load_scenario
    from hasim.topology import build_topology

    s = load_scenario(path)
    build_topology(s)
    # Each sweep value once, one key at a time: the cartesian product adds nothing a
    # single value can break, and would be exponential.
    for key, values in s.spec.sweep.items():
        for i, value in enumerate(values):
            try:
                build_topology(s.with_overrides({key: value}))
            except ScenarioError as exc:
                where = f"{exc.field}: " if exc.field and exc.field != key else ""
                raise ScenarioError(
                    f"value {value!r}: {where}{exc.problem}", file=path, field=f"sweep.{key}[{i}]"
                ) from None
    return s


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "endpoints": cmd_endpoints,
    "topology": cmd_topology,
    "validate": cmd_validate,
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

    p = sub.add_parser("topology", help="the component graph, its audit and drawing")
    p.add_argument("path", help="a scenario file or an Ansible inventory (file or directory)")
    p.add_argument("--rules", help="rule set (default: the scenario's, else ha-mode-2016)")
    p.add_argument("--audit", action="store_true", help="list single points of failure")
    p.add_argument("--draw", metavar="FILE.png", help="draw the layered topology")

    p = sub.add_parser("validate", help="check scenario files")
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hasim`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HasimError as exc:
        print(f"hasim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hasim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
