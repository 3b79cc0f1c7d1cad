"""Scenario files: the YAML schema (docs/interfaces.md), validation with clear errors, overrides.

Every knob keeps the name and default of the software it models (docs/model.md), with the
source next to it. Unknown keys are errors. Durations take units (``ms``, ``s``, ``m``,
``h``, ``d``). A validation error names the file, the line where it can, the field path
and the problem, and is raised as :class:`hasim.ScenarioError`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hasim.errors import ScenarioError
from hasim.kubespray.cluster import Cluster, build_cluster, generate_cluster
from hasim.kubespray.endpoints import DEFAULT_RULES, RULES
from hasim.spec.units import parse_duration


def _duration(value: Any) -> float:
    return parse_duration(value)


#: Seconds, written in a scenario with a unit (``10s``, ``500ms``, ``5m``).
Duration = Annotated[float, BeforeValidator(_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- cluster ---------------------------------------------------------------------------------


class GenerateSpec(_Strict):
    """A synthetic cluster: ``masters`` (etcd on the first ``etcd`` of them), ``nodes``."""

    masters: int = Field(3, ge=1, le=250)
    etcd: int = Field(3, ge=0, le=250)
    nodes: int = Field(0, ge=0, le=65024)


class HostSpec(_Strict):
    """An inline host: its addresses, groups and own variables."""

    ip: str | None = None
    access_ip: str | None = None
    ansible_host: str | None = None
    groups: list[str] = Field(default_factory=list)
    vars: dict[str, Any] = Field(default_factory=dict)


class ClusterSpec(_Strict):
    """Where the hosts come from and the variables the endpoint rules read."""

    rules: str = DEFAULT_RULES
    inventory: str | None = None
    hosts: dict[str, HostSpec] | None = None
    generate: GenerateSpec | None = None
    vars: dict[str, Any] = Field(default_factory=dict)

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: str) -> str:
        if value not in RULES:
            raise ValueError(f"unknown rule set {value!r}; known: {', '.join(sorted(RULES))}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ClusterSpec:
        if self.inventory is not None and self.generate is not None:
            raise ValueError("give either 'inventory' or 'generate', not both")
        if self.inventory is None and self.generate is None and not self.hosts:
            raise ValueError("no hosts: give 'inventory', 'hosts' or 'generate'")
        return self


# --- load balancers --------------------------------------------------------------------------


class NginxSpec(_Strict):
    """nginx ``stream`` proxy, the 2016 local LB (docs/model.md, nginx).

    Defaults: kubespray's ``nginx.conf.j2`` (``least_conn``, ``proxy_connect_timeout 1s``,
    ``proxy_timeout 10m``, 2 workers) over nginx's own (``max_fails=1``,
    ``fail_timeout=10s``, ``proxy_next_upstream on``, tries and timeout unlimited).
    """

    kind: Literal["nginx"] = "nginx"
    max_fails: int = Field(1, ge=0)
    fail_timeout: Duration = 10.0
    proxy_connect_timeout: PositiveDuration = 1.0
    proxy_timeout: PositiveDuration = 600.0
    workers: int = Field(2, ge=1, le=64)
    balance: Literal["least_conn", "round_robin"] = "least_conn"
    proxy_next_upstream: bool = True
    proxy_next_upstream_tries: int = Field(0, ge=0)
    proxy_next_upstream_timeout: Duration = 0.0
    # `listen ... reuseport`: kubespray does not set it. Without it every worker waits on
    # the one listening socket with EPOLLEXCLUSIVE and the kernel wakes the first idle
    # worker, so at a node's load one worker takes nearly every connection (the lab: 147
    # of 149); with it the kernel hashes each connection to a worker's own socket.
    reuseport: bool = False
    # Not an nginx setting but a race it loses: the share of a client's immediate redials,
    # after it closed its connection itself (a failed HTTP/2 health check), that the
    # kernel hands to worker 1 because worker 0 is still tearing that connection down.
    # Measured in the lab's client-go cells (docs/lab.md): 14 of 136 redials, 2-core machine.
    redial_other_worker: float = Field(0.1, ge=0.0, le=1.0)


class _HAProxyBase(_Strict):
    """HAProxy 2.6 in ``mode tcp`` (docs/model.md, HAProxy); names are haproxy.cfg's with ``_``."""

    kind: Literal["haproxy"] = "haproxy"
    inter: PositiveDuration = 2.0
    fastinter: PositiveDuration | None = None  # None: HAProxy uses inter
    downinter: PositiveDuration | None = None  # None: HAProxy uses inter
    rise: int = Field(2, ge=1)
    fall: int = Field(3, ge=1)
    timeout_connect: PositiveDuration | None = None  # None: unset (the kernel's SYN timeout)
    timeout_check: PositiveDuration | None = None
    timeout_client: PositiveDuration = 300.0
    timeout_server: PositiveDuration = 900.0
    check: bool = True
    check_type: Literal["httpchk", "ssl-hello-chk", "tcp-check"] = "httpchk"
    balance: Literal["leastconn", "roundrobin"] = "leastconn"
    retries: int = Field(3, ge=0)
    redispatch: bool = False
    slowstart: Duration = 0.0
    shutdown_sessions: bool = False


class LocalHAProxySpec(_HAProxyBase):
    """The local HAProxy of current kubespray (``haproxy.cfg.j2``): ``inter 15s downinter
    15s rise 2 fall 2 slowstart 60s``, ``option httpchk GET /healthz`` with ``check-ssl``,
    ``timeout connect 30s``, ``timeout check 30s``, ``timeout client 5m``, ``timeout server
    15m``, ``option redispatch``, ``retries 5``."""

    inter: PositiveDuration = 15.0
    fastinter: PositiveDuration | None = 15.0
    downinter: PositiveDuration | None = 15.0
    rise: int = Field(2, ge=1)
    fall: int = Field(2, ge=1)
    timeout_connect: PositiveDuration | None = 30.0
    timeout_check: PositiveDuration | None = 30.0
    retries: int = Field(5, ge=0)
    redispatch: bool = True
    slowstart: Duration = 60.0


class TrackScriptSpec(_Strict):
    """A keepalived ``vrrp_script`` checking the instance's own LB process (``killall -0
    haproxy``), listed under the instance's ``track_script``. keepalived 2.2's defaults
    (``vrrp_data.c`` ``alloc_vrrp_script``): ``interval 1``, ``rise 1``, ``fall 1``,
    ``weight 0``. With weight 0, ``fall`` failed runs put the instance in FAULT: it sends a
    priority-0 advert and drops the VIP. A negative weight lowers its priority instead.
    ``killall -0`` answers at once, so the script's ``timeout`` never enters."""

    interval: PositiveDuration = 1.0
    fall: int = Field(1, ge=1)
    rise: int = Field(1, ge=1)
    weight: int = Field(0, ge=-253, le=253)


class VipSpec(_Strict):
    """How clients reach the external LB instances: one address, a VRRP VIP or kube-vip.

    keepalived 2.2 defaults (docs/model.md, the VIP): ``advert_int 1s``, ``priority 100`` (the
    first instance is given ``priority`` and each next one 1 less), preempt on, no
    ``vrrp_sync_group`` (``sync_group``), no ``track_script``.
    kube-vip, kubespray defaults: lease 5 s, renew deadline 3 s, retry period 1 s.
    """

    kind: Literal["none", "keepalived", "kube-vip"] = "none"
    advert_int: PositiveDuration = 1.0
    priority: int = Field(100, ge=1, le=254)
    preempt: bool = True
    #: The instances are in a ``vrrp_sync_group``: a returning ``state MASTER`` instance
    #: preempts after ``advert_int + 1/256`` s instead of the full master-down interval.
    sync_group: bool = False
    track_script: TrackScriptSpec | None = None
    lease_duration: PositiveDuration = 5.0
    renew_deadline: PositiveDuration = 3.0
    retry_period: PositiveDuration = 1.0


class ExternalHAProxySpec(_HAProxyBase):
    """The external LB of the 2016 HA doc's example: ``balance roundrobin``, ``option
    ssl-hello-chk``, ``timeout client 3h``, ``timeout server 3h``, and servers listed
    WITHOUT ``check`` (so no health checking at all, kubespray #5663). Set ``check: true``
    with ``inter: 10s`` for the 2020 fix."""

    check: bool = False
    check_type: Literal["httpchk", "ssl-hello-chk", "tcp-check"] = "ssl-hello-chk"
    balance: Literal["leastconn", "roundrobin"] = "roundrobin"
    timeout_client: PositiveDuration = 3 * 3600.0
    timeout_server: PositiveDuration = 3 * 3600.0
    instances: int = Field(1, ge=1, le=16)
    #: ``dedicated``: ``instances`` LB hosts (extlb1..) reached at the LB address;
    #: ``every-node``: an instance on every k8s-cluster host, each reaching its own (the
    #: 2016 doc's note: HA for the HAProxy instances without a VIP).
    placement: Literal["dedicated", "every-node"] = "dedicated"
    vip: VipSpec = Field(default_factory=VipSpec)


LocalLBSpec = Annotated[NginxSpec | LocalHAProxySpec, Field(discriminator="kind")]


class BalancersSpec(_Strict):
    """``local``: the proxy on each non-master node; ``external``: the LB in front of all."""

    local: LocalLBSpec | None = None
    external: ExternalHAProxySpec | None = None

    # A node's LB kind comes from the topology (the rule set's default when the scenario
    # gives no ``local``): these are its settings, the scenario's if they are of that kind.
    def local_nginx(self) -> NginxSpec:
        return self.local if isinstance(self.local, NginxSpec) else NginxSpec()

    def local_haproxy(self) -> LocalHAProxySpec:
        return self.local if isinstance(self.local, LocalHAProxySpec) else LocalHAProxySpec()

    def external_haproxy(self) -> ExternalHAProxySpec:
        return self.external or ExternalHAProxySpec()


# --- clients and control loops ---------------------------------------------------------------


class ClientsSpec(_Strict):
    """client-go behaviour by Kubernetes version (docs/model.md, clients).

    ``legacy`` (< 1.11): one HTTP/2 connection, no health check, a silently dead
    connection lasts until ``tcp_retries2``. ``closeconns`` (1.11-1.19): as legacy, but the
    kubelet redials after 2 failed heartbeats (k8s #63492). ``modern`` (>= 1.20): HTTP/2
    ping health check (k8s #95981).
    """

    profile: Literal["legacy", "closeconns", "modern"] = "modern"
    http2_read_idle_timeout: Duration = 30.0
    http2_ping_timeout: PositiveDuration = 15.0
    tcp_retries2_timeout: PositiveDuration = 924.0
    disable_http2: bool = False
    dial_timeout: PositiveDuration = 30.0
    tls_handshake_timeout: PositiveDuration = 10.0
    # None: the kernel's give-up time from network.tcp_syn_retries/linear (127 s classic).
    tcp_syn_timeout: PositiveDuration | None = None
    watch_backoff_initial: PositiveDuration = 0.8
    watch_backoff_cap: PositiveDuration = 30.0


class KubeletSpec(_Strict):
    """Kubelet heartbeats: lease every ``renew_interval`` (0.25 x lease duration), node
    status every ``status_update_frequency``; requests time out after
    min(status_update_frequency, lease_duration) (kubelet's heartbeat client)."""

    lease_duration: PositiveDuration = 40.0
    renew_interval: PositiveDuration = 10.0
    status_update_frequency: PositiveDuration = 10.0


class ControllerManagerSpec(_Strict):
    """kube-controller-manager's node lifecycle controller (kubespray keeps grace 40 s)."""

    node_monitor_grace_period: PositiveDuration = 40.0
    node_monitor_period: PositiveDuration = 5.0
    leader_elect_lease_duration: PositiveDuration = 15.0
    leader_elect_renew_deadline: PositiveDuration = 10.0
    leader_elect_retry_period: PositiveDuration = 2.0
    #: The master whose controller-manager holds the leader lease at time 0 (the first
    #: started wins in practice; kubespray starts masters in inventory order).
    initial_leader: str | None = None


class EtcdSpec(_Strict):
    """etcd raft timers (etcd defaults; kubespray 2016 used election 10 s, today 250 ms/5 s)."""

    heartbeat_interval: PositiveDuration = 0.1
    election_timeout: PositiveDuration = 1.0
    # --pre-vote: off in etcd 3.4, on by default from 3.5 (docs/model.md, etcd).
    pre_vote: bool = False


class NetworkSpec(_Strict):
    """The LAN: one round trip between any two hosts."""

    rtt: PositiveDuration = 0.0005
    # The kernel's SYN retransmissions (docs/model.md, clients): RTOs start at 1 s and double, the
    # first `tcp_syn_linear_timeouts` + 1 of them stay at 1 s (sysctl of Linux >= 6.5,
    # default 4 there; 0 is the classic doubling of older kernels), and a connect gives up
    # after `tcp_syn_retries` retransmissions: 1, 3, 7, 15, 31, 63 s, failure at 127 s.
    # A blackholed connect succeeds at the first retransmission after the path heals.
    tcp_syn_retries: int = Field(6, ge=1, le=127)
    tcp_syn_linear_timeouts: int = Field(0, ge=0)


class ApiserverSpec(_Strict):
    """kube-apiserver: time to serve one request (lease update, status patch, healthz)."""

    service_time: Duration = 0.002


# --- faults ----------------------------------------------------------------------------------

FaultKind = Literal["crash", "stop", "poweroff", "partition", "slow", "lb-crash", "random"]


class FaultSpec(_Strict):
    """One fault (docs/interfaces.md): at a time, for a duration or for good; or random ones.

    ``crash``: every process of the target dies, its kernel answers RST. ``stop``: the
    same processes stop cleanly (``systemctl stop``): connections close with FIN as in a
    crash, and a keepalived MASTER sends a priority-0 advert and drops the VIP. ``poweroff``: the
    host vanishes. ``partition``: traffic between ``target`` and ``peers`` is dropped both
    ways. ``slow``: the target's processes answer ``delay`` late. ``lb-crash``: the load
    balancer process on the target dies. ``random``: ``targets`` fail with exponential (or
    Weibull) times between failures ``mtbf`` and repair times ``mttr``.
    """

    kind: FaultKind
    at: Duration | None = None
    target: str | None = None
    duration: Duration | None = None
    peers: str | None = None
    delay: PositiveDuration = 5.0
    targets: str | None = None
    mtbf: PositiveDuration | None = None
    mttr: PositiveDuration | None = None
    fault: Literal["crash", "poweroff"] = "crash"
    distribution: Literal["exponential", "weibull"] = "exponential"
    shape: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> FaultSpec:
        if self.kind == "random":
            missing = [f for f in ("targets", "mtbf", "mttr") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"a random fault needs {', '.join(missing)}")
            return self
        if self.at is None:
            raise ValueError(f"a {self.kind} fault needs 'at' (when it happens)")
        if not self.target:
            raise ValueError(f"a {self.kind} fault needs 'target'")
        if self.kind == "partition" and not self.peers:
            raise ValueError("a partition needs 'peers' (the other side)")
        return self


# --- the scenario ----------------------------------------------------------------------------


class SamplingSpec(_Strict):
    """Sampled clients for very large clusters (docs/performance.md). With ``nodes`` K > 0,
    every class of symmetric nodes (same components and endpoints, each behind its own
    local LB or straight to the apiservers, no fault aimed at one of them) larger than K
    is represented by K of its nodes, simulated in full; the others are simulated in
    aggregate: their local HAProxy's health checks exactly, their clients not at all.
    Tables then carry a ``weight`` column (nodes represented per simulated one) and the
    summary's figures are weighted estimates. 0: every node in full."""

    nodes: int = Field(0, ge=0)
    #: Also sample nodes behind an external LB or a VIP (an approximation: see
    #: :mod:`hasim.sim.sampling`).
    shared_lb: bool = False


class ScenarioSpec(_Strict):
    """A whole scenario file (docs/interfaces.md)."""

    name: str = Field(min_length=1)
    description: str = ""
    cluster: ClusterSpec
    balancers: BalancersSpec = Field(default_factory=BalancersSpec)
    clients: ClientsSpec = Field(default_factory=ClientsSpec)
    kubelet: KubeletSpec = Field(default_factory=KubeletSpec)
    controller_manager: ControllerManagerSpec = Field(default_factory=ControllerManagerSpec)
    etcd: EtcdSpec = Field(default_factory=EtcdSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    apiserver: ApiserverSpec = Field(default_factory=ApiserverSpec)
    faults: list[FaultSpec] = Field(default_factory=list)
    duration: PositiveDuration = 600.0
    #: ``full``: every client, LB and control loop; ``structural``: only the fault
    #: timeline and who has a working path (long-run availability over simulated years).
    fidelity: Literal["full", "structural"] = "full"
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    replications: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """A validated scenario with its cluster resolved (inline, generated or inventory).

    ``spec`` holds every knob with the default actually used; ``raw`` is the mapping it
    was validated from, kept so that :meth:`with_overrides` re-validates the whole.
    """

    spec: ScenarioSpec
    cluster: Cluster
    raw: Mapping[str, Any]
    path: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def rules(self) -> str:
        return self.spec.cluster.rules

    def resolved(self) -> dict[str, Any]:
        """Every setting with the default actually used, as plain JSON-able data."""
        return self.spec.model_dump(mode="json")

    def with_overrides(self, overrides: Mapping[str, Any]) -> Scenario:
        """A copy with dotted keys set (``{"balancers.local.fail_timeout": "5s"}``),
        validated again; an unknown key is a :class:`ScenarioError` naming it."""
        raw = copy.deepcopy(dict(self.raw))
        for key, value in overrides.items():
            _set_dotted(raw, key, value, self.path)
        return scenario_from_dict(raw, self.path)


def _set_dotted(raw: dict[str, Any], key: str, value: Any, path: str | None) -> None:
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ScenarioError(f"bad override key {key!r}", file=path, field=key)
    node: Any = raw
    for part in parts[:-1]:
        if isinstance(node, list):
            node = _list_item(node, part, key, path)
            continue
        if not isinstance(node, dict):
            raise ScenarioError("cannot set a field inside a non-map value", file=path, field=key)
        node = node.setdefault(part, {})
        if node is None:
            raise ScenarioError("cannot set a field inside an empty value", file=path, field=key)
    if isinstance(node, list):
        idx = _index(parts[-1], len(node), key, path)
        node[idx] = value
    elif isinstance(node, dict):
        node[parts[-1]] = value
    else:
        raise ScenarioError("cannot set a field inside a non-map value", file=path, field=key)


def _index(part: str, length: int, key: str, path: str | None) -> int:
    try:
        idx = int(part)
    except ValueError:
        raise ScenarioError(f"{part!r} is not a list index", file=path, field=key) from None
    if not -length <= idx < length:
        raise ScenarioError(f"index {idx} is out of range (length {length})", file=path, field=key)
    return idx


def _list_item(node: list[Any], part: str, key: str, path: str | None) -> Any:
    return node[_index(part, len(node), key, path)]


# --- loading ---------------------------------------------------------------------------------


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario file; bad input raises :class:`ScenarioError`."""
    p = Path(path)
    raw = _read_yaml(p)
    return scenario_from_dict(raw, str(p), text=p.read_text(encoding="utf-8"))


def _read_yaml(p: Path) -> dict[str, Any]:
    if not p.exists():
        raise ScenarioError("file does not exist", file=str(p))
    if p.is_dir():
        raise ScenarioError("is a directory, expected a scenario file (.yaml)", file=str(p))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ScenarioError(f"malformed YAML: {exc.problem}", file=str(p), line=line) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"malformed YAML: {exc}", file=str(p)) from None
    if not isinstance(data, dict):
        raise ScenarioError(
            f"expected a map of scenario fields at the top, got {type(data).__name__}", file=str(p)
        )
    return data


def scenario_from_dict(
    raw: Mapping[str, Any], path: str | None = None, text: str | None = None
) -> Scenario:
    """Validate a scenario given as data (``path`` names it in errors and anchors the
    inventory path; ``text`` is the YAML it came from, for line numbers)."""
    raw = dict(raw)
    if "name" not in raw and path:
        raw["name"] = Path(path).stem
    try:
        spec = ScenarioSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _field_path(raw, err["loc"])
        problem = _problem(err)
        if len(exc.errors()) > 1:
            problem += f" (and {len(exc.errors()) - 1} more problem(s))"
        line = _line_of(text, err["loc"]) if text else None
        raise ScenarioError(problem, file=path, field=field, line=line) from None
    cluster = _resolve_cluster(spec, path)
    _check_sweep(spec, raw, path)
    scenario = Scenario(spec=spec, cluster=cluster, raw=raw, path=path)
    _check_targets(scenario, text)
    # The endpoint rules raise on what a cluster cannot be (no master, a broken
    # loadbalancer_apiserver): say so now, not at the first run.
    from hasim.kubespray.endpoints import evaluate_endpoints

    evaluate_endpoints(scenario)
    return scenario


def _field_path(raw: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    """The dotted path of ``loc`` as the user wrote it: pydantic inserts the tag of a
    tagged union member (``balancers.local.nginx.max_fails``), which is not in the file."""
    parts: list[str] = []
    node: Any = raw
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif not last and isinstance(node, Mapping) and node.get("kind") == part:
            continue  # the union tag
        elif isinstance(part, str) and part.startswith(("function-", "tagged-")):
            continue
        else:
            node = None
        parts.append(f"[{part}]" if isinstance(part, int) else str(part))
    return ".".join(parts).replace(".[", "[") or "(top level)"


def _problem(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in {"union_tag_not_found", "union_tag_invalid"}:
        expected = err.get("ctx", {}).get("expected_tags", "nginx, haproxy")
        return f"needs 'kind', one of: {expected}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    given = err.get("input")
    if kind not in {"missing"} and not isinstance(given, dict | list) and given is not None:
        msg = f"{msg} (got {given!r})"
    return msg


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc``, as deep as the path can be followed."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == str(part)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _resolve_cluster(spec: ScenarioSpec, path: str | None) -> Cluster:
    cs = spec.cluster
    source = path or "<scenario>"
    if cs.inventory is not None:
        base = Path(path).parent if path else Path.cwd()
        inv_path = (base / cs.inventory).resolve()
        cluster = cluster_from_inventory(inv_path, source=source, field="cluster.inventory")
    elif cs.generate is not None:
        g = cs.generate
        cluster = generate_cluster(g.masters, g.etcd, g.nodes)
        cluster = Cluster(cluster.hosts, cluster.groups, source)
    else:
        cluster = Cluster((), {}, source)
    if cs.hosts:
        cluster = _merge_inline(cluster, cs.hosts, source)
    extra = dict(cs.vars)
    if spec.balancers.local is not None and "loadbalancer_apiserver_type" not in extra:
        # The balancer the scenario simulates is the one the rules place.
        extra["loadbalancer_apiserver_type"] = spec.balancers.local.kind
    return cluster.with_vars(extra)


def _merge_inline(cluster: Cluster, hosts: Mapping[str, HostSpec], source: str) -> Cluster:
    rows: list[tuple[str, list[str], dict[str, Any]]] = [
        (h.name, sorted(h.groups), dict(h.vars)) for h in cluster.hosts
    ]
    index = {name: i for i, (name, _, _) in enumerate(rows)}
    for name, hs in hosts.items():
        own = {k: v for k, v in (("ip", hs.ip), ("access_ip", hs.access_ip)) if v is not None}
        if hs.ansible_host is not None:
            own["ansible_host"] = hs.ansible_host
        own.update(hs.vars)
        if name in index:
            old_name, old_groups, old_vars = rows[index[name]]
            rows[index[name]] = (old_name, sorted(set(old_groups) | set(hs.groups)),
                                 {**old_vars, **own})
        else:
            index[name] = len(rows)
            rows.append((name, list(hs.groups), own))
    spellings = {h.name: h.spelled_groups for h in cluster.hosts}
    return build_cluster(rows, source=source, group_order=cluster.groups, spellings=spellings)


#: Inventories already read, by path and the state of their files: an assessment builds
#: dozens of scenarios on one inventory, and Ansible takes seconds on a big one.
_INVENTORIES: dict[tuple[str, tuple[tuple[str, int, int], ...]], Cluster] = {}


def _inventory_stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    # The files Ansible reads: the inventory (every file of a directory), and the
    # group_vars/ and host_vars/ beside an inventory file.
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        files = [path] + sorted(p for d in ("group_vars", "host_vars")
                                for p in (path.parent / d).rglob("*") if p.is_file())
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f), st.st_mtime_ns, st.st_size))
    return tuple(out)


def cluster_from_inventory(path: Path, source: str, field: str) -> Cluster:
    """A :class:`Cluster` read from an Ansible inventory with Ansible's own code."""
    key = None
    if path.exists():
        key = (str(path.resolve()), _inventory_stamp(path))
        if key in _INVENTORIES:
            return _INVENTORIES[key]
    cluster = _read_inventory_cluster(path, source, field)
    if key is not None:
        if len(_INVENTORIES) > 16:
            _INVENTORIES.clear()
        _INVENTORIES[key] = cluster
    return cluster


def _read_inventory_cluster(path: Path, source: str, field: str) -> Cluster:
    from hasim.kubespray.inventory import InventoryError, read_inventory

    try:
        data = read_inventory(path)
    except InventoryError as exc:
        raise ScenarioError(str(exc), file=source, field=field) from None
    rows = [(h.name, list(h.groups), dict(h.vars)) for h in data.hosts]
    spellings = {h.name: h.groups for h in data.hosts}
    return build_cluster(rows, source=str(path), group_order=data.groups, spellings=spellings)


def _check_sweep(spec: ScenarioSpec, raw: Mapping[str, Any], path: str | None) -> None:
    for key, values in spec.sweep.items():
        if not values:
            raise ScenarioError("a sweep needs at least one value", file=path, field=f"sweep.{key}")
        for i, value in enumerate(values):
            probe = copy.deepcopy(dict(raw))
            probe.pop("sweep", None)
            try:
                _set_dotted(probe, key, value, path)
                ScenarioSpec.model_validate(probe)
            except ScenarioError as exc:
                raise ScenarioError(exc.problem, file=path, field=f"sweep.{key}[{i}]") from None
            except ValidationError as exc:
                err = exc.errors()[0]
                raise ScenarioError(
                    f"{_field_path(probe, err['loc'])}: {_problem(err)}",
                    file=path,
                    field=f"sweep.{key}[{i}]",
                ) from None


def _check_targets(scenario: Scenario, text: str | None) -> None:
    from hasim.kubespray.targets import TargetError, resolve_target

    leader = scenario.spec.controller_manager.initial_leader
    if leader is not None and leader not in scenario.cluster.members("kube-master"):
        line = _line_of(text, ("controller_manager", "initial_leader")) if text else None
        raise ScenarioError(f"{leader!r} is not a host of kube-master", file=scenario.path,
                            field="controller_manager.initial_leader", line=line)

    for i, fault in enumerate(scenario.spec.faults):
        for name in ("target", "targets", "peers"):
            value = getattr(fault, name)
            if value is None:
                continue
            try:
                resolve_target(scenario, value)
            except TargetError as exc:
                line = _line_of(text, ("faults", i, name)) if text else None
                raise ScenarioError(
                    str(exc), file=scenario.path, field=f"faults[{i}].{name}", line=line
                ) from None


def looks_like_scenario(path: Path) -> bool:
    """Whether ``path`` is a scenario file rather than an Ansible inventory."""
    if path.is_dir() or path.suffix.lower() not in {".yml", ".yaml"}:
        return False
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return True  # let the scenario loader report the problem with its line
    return isinstance(data, dict) and "cluster" in data


def looks_like_inventory(path: Path) -> bool:
    """Whether ``path`` is plainly an Ansible inventory: a directory, an INI file, or YAML
    whose top-level groups hold ``hosts`` or ``children`` (Ansible's YAML inventory)."""
    if path.is_dir():
        return True
    if path.suffix.lower() not in {".yml", ".yaml", ".json"}:
        return path.is_file()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return False
    return (isinstance(data, dict) and "cluster" not in data and bool(data) and all(
        isinstance(v, dict) and bool({"hosts", "children", "vars"} & set(v))
        for v in data.values()))


def load_cluster(path: str | os.PathLike[str]) -> Cluster:
    """The cluster of a scenario file, or of an Ansible inventory (file or directory)."""
    p = Path(path)
    if not p.exists():
        raise ScenarioError("path does not exist", file=str(p))
    if looks_like_scenario(p):
        return load_scenario(p).cluster
    return cluster_from_inventory(p, source=str(p), field="inventory")
