"""The cluster: hosts, their addresses, groups and variables, from any of three sources.

One model serves inline hosts of a scenario, the generator (``generate: {masters, etcd,
nodes}``) and a user's real Ansible inventory (read by :mod:`hasim.kubespray.inventory`). Group
names are normalised to the 2016 spelling that the HA doc uses (``kube-master``,
``kube-node``, ``etcd``, ``k8s-cluster``); the current spellings are accepted as aliases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MASTER = "kube-master"
NODE = "kube-node"
ETCD = "etcd"
K8S = "k8s-cluster"

#: Every spelling kubespray has used for its groups, mapped to the 2016 one.
GROUP_ALIASES: Mapping[str, str] = {
    "kube-master": MASTER,
    "kube_master": MASTER,
    "kube_control_plane": MASTER,
    "kube-control-plane": MASTER,
    "kube-node": NODE,
    "kube_node": NODE,
    "etcd": ETCD,
    "k8s-cluster": K8S,
    "k8s_cluster": K8S,
}

#: The order in which roles are listed (endpoint tables, JSON output).
ROLE_ORDER = (MASTER, ETCD, NODE, K8S)


def canonical_group(name: str) -> str:
    """The 2016 spelling of a kubespray group name; other names are kept as they are."""
    return GROUP_ALIASES.get(name, name)


@dataclass(frozen=True)
class Host:
    """One inventory host with its merged variables (host vars over group vars)."""

    name: str
    groups: frozenset[str]
    vars: Mapping[str, Any] = field(default_factory=dict)
    #: The host's groups as its inventory spelled them (``kube-master``,
    #: ``kube_control_plane``, ...); empty for inline and generated hosts. Current
    #: kubespray treats the spellings differently (docs/model.md, "Group names").
    spelled_groups: frozenset[str] = frozenset()

    @property
    def default_address(self) -> str:
        """Ansible's address for the host: ``ansible_host``, else its older spelling
        ``ansible_ssh_host`` (kargo's 2016 ``inventory.example``), else the host name."""
        return str(self.vars.get("ansible_host") or self.vars.get("ansible_ssh_host")
                   or self.name)

    @property
    def ip(self) -> str:
        """kubespray's ``ip``: the ``ip`` var, deferring to the host's default address."""
        return str(self.vars.get("ip") or self.default_address)

    @property
    def access_ip(self) -> str:
        """kubespray's ``access_ip``, deferring to :attr:`ip` (the 2016 doc's ``aip``)."""
        return str(self.vars.get("access_ip") or self.ip)

    def var(self, name: str, default: Any = None) -> Any:
        """The host's value of an Ansible variable, or ``default`` when it is undefined."""
        return self.vars.get(name, default)


@dataclass(frozen=True)
class Cluster:
    """Hosts in inventory order and groups with their members in inventory order.

    ``groups[MASTER][0]`` is kubespray's ``groups['kube-master'][0]``, the first master
    (``m[0]`` of the HA doc) that the default, non-HA mode points every node at.
    """

    hosts: tuple[Host, ...]
    groups: Mapping[str, tuple[str, ...]]
    source: str = "<inline>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {h.name: h for h in self.hosts})

    def __getstate__(self) -> dict[str, Any]:
        # The clusters derived by with_vars() stay behind: a worker gets this one only.
        return {k: v for k, v in self.__dict__.items() if k != "_with_vars"}

    def host(self, name: str) -> Host:
        """The host called ``name`` (``KeyError`` if there is none)."""
        return self._by_name[name]  # type: ignore[attr-defined]

    def has_host(self, name: str) -> bool:
        """Whether a host of that name exists."""
        return name in self._by_name  # type: ignore[attr-defined]

    def members(self, group: str) -> tuple[str, ...]:
        """Members of ``group`` (any spelling) in inventory order; empty if no such group."""
        return tuple(self.groups.get(canonical_group(group), ()))

    @property
    def masters(self) -> tuple[Host, ...]:
        """Hosts of ``kube-master`` in inventory order."""
        return tuple(self.host(n) for n in self.members(MASTER))

    @property
    def etcd_members(self) -> tuple[Host, ...]:
        """Hosts of ``etcd`` in inventory order."""
        return tuple(self.host(n) for n in self.members(ETCD))

    @property
    def k8s_hosts(self) -> tuple[Host, ...]:
        """Hosts of ``k8s-cluster`` (masters and nodes) in inventory order."""
        return tuple(self.host(n) for n in self.members(K8S))

    def with_vars(self, extra: Mapping[str, Any]) -> Cluster:
        """The same cluster with ``extra`` set on every host, over every inventory value.

        Scenario ``cluster.vars`` and sweeps use this: they act like Ansible's extra vars
        (``-e``), the highest precedence, so a sweep over a variable always takes effect.
        """
        if not extra:
            return self
        # The same extra vars give the same (immutable) cluster: the scenarios of one
        # assessment share it, and what is computed from it (endpoints) once.
        key = repr(sorted(extra.items(), key=lambda kv: kv[0]))
        memo: dict[str, Cluster] = self.__dict__.setdefault("_with_vars", {})
        if key not in memo:
            hosts = tuple(Host(h.name, h.groups, {**h.vars, **extra}, h.spelled_groups)
                          for h in self.hosts)
            memo[key] = Cluster(hosts, self.groups, self.source)
        return memo[key]


def build_cluster(
    hosts: Iterable[tuple[str, Iterable[str], Mapping[str, Any]]],
    source: str = "<inline>",
    group_order: Mapping[str, Iterable[str]] | None = None,
    spellings: Mapping[str, Iterable[str]] | None = None,
) -> Cluster:
    """A :class:`Cluster` from ``(name, groups, vars)`` triples in inventory order.

    Group names are normalised; ``k8s-cluster`` always contains every master and node,
    as kubespray's inventories define it with ``[k8s-cluster:children]``. ``group_order``
    gives a group's member order where it differs from host order (Ansible lists a
    group's members in the order the group names them). ``spellings`` maps a host to its
    group names as an inventory wrote them (:attr:`Host.spelled_groups`).
    """
    records = [(name, {canonical_group(g) for g in groups}, dict(v)) for name, groups, v in hosts]
    members: dict[str, list[str]] = {}
    for name, groups, _ in records:
        for g in sorted(groups):
            members.setdefault(g, []).append(name)
    if group_order:
        for raw, names in group_order.items():
            g = canonical_group(raw)
            present = set(members.get(g, ()))
            ordered = [n for n in names if n in present]
            named = set(ordered)
            rest = [n for n in members.get(g, []) if n not in named]
            if ordered:
                members[g] = ordered + rest
    k8s = members.setdefault(K8S, [])
    in_k8s = set(k8s)  # membership by set: a list's `in` made 10,000 nodes quadratic
    for g in (MASTER, NODE):
        for name in members.get(g, []):
            if name not in in_k8s:
                k8s.append(name)
                in_k8s.add(name)
    spelled = spellings or {}
    host_objs = tuple(
        Host(name, frozenset(groups | ({K8S} if name in in_k8s else set())), v,
             frozenset(spelled.get(name, ())))
        for name, groups, v in records
    )
    if not members[K8S]:
        del members[K8S]
    return Cluster(host_objs, {g: tuple(m) for g, m in members.items()}, source)


def generate_cluster(masters: int, etcd: int, nodes: int) -> Cluster:
    """A synthetic cluster for sizes no one types by hand.

    Masters are ``master1..`` on 10.0.0.0/24; etcd runs on the first ``etcd`` masters when
    ``etcd <= masters`` (kubespray's usual layout), else on separate hosts ``etcd1..`` on
    10.0.1.0/24; nodes are ``node1..`` from 10.1.0.1 on, 254 to a /24.
    """
    if masters < 1:
        raise ValueError("generate.masters must be at least 1")
    if etcd < 0 or nodes < 0:
        raise ValueError("generate.etcd and generate.nodes must not be negative")
    if masters > 250 or (etcd > masters and etcd > 250) or nodes > 254 * 256:
        raise ValueError("generate: at most 250 masters/etcd hosts and 65,024 nodes")
    rows: list[tuple[str, list[str], dict[str, Any]]] = []
    for i in range(1, masters + 1):
        groups = ["kube-master"] + (["etcd"] if etcd <= masters and i <= etcd else [])
        rows.append((f"master{i}", groups, {"ip": f"10.0.0.{i}"}))
    if etcd > masters:
        for i in range(1, etcd + 1):
            rows.append((f"etcd{i}", ["etcd"], {"ip": f"10.0.1.{i}"}))
    for i in range(nodes):
        rows.append(
            (f"node{i + 1}", ["kube-node"], {"ip": f"10.1.{i // 254}.{i % 254 + 1}"})
        )
    return build_cluster(rows, source=f"<generated {masters}m/{etcd}e/{nodes}n>")
