"""The timers of a real cluster, read from its inventory as kubespray reads them.

:func:`read_knobs` takes kubespray's own variables (``kube_version``,
``kube_controller_node_monitor_grace_period``, ``etcd_election_timeout``, kube-vip's...)
from the inventory where they are set and kubespray's defaults of the rule set's era where
they are not, and says for every value where it came from. :meth:`Knobs.overrides` turns
them into scenario keys (docs/scenarios.md), so a simulation of the cluster runs with the
timers the cluster has.

Defaults (docs/model.md, "Reading a cluster's knobs"): kargo of October 2016 pinned
``kube_version`` v1.4.3 and etcd's election timeout at 10 s (``roles/etcd/templates/
etcd.j2``, heartbeat etcd's 100 ms); current kubespray's ``kube_version`` is the newest of
its checksums (1.36 in ``roles/kubespray_defaults/vars/main/checksums.yml``), etcd 250 ms
/ 5 s (``roles/etcd_defaults``), grace 40 s and monitor period 5 s
(``roles/kubernetes/control-plane/defaults``), status updates 10 s and kube-vip's lease
5 s / 3 s / 1 s (``roles/kubernetes/node/defaults``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hasim.errors import ScenarioError
from hasim.kubespray.cluster import Cluster
from hasim.spec.units import parse_duration

#: Client profiles by Kubernetes minor version (docs/model.md, "Clients"): before 1.11 no
#: health check; 1.11-1.19 the kubelet redials after 2 failed heartbeats; from 1.20 the
#: HTTP/2 ping.
PROFILE_BOUNDS = ((11, "legacy"), (20, "closeconns"))

_ERA_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "2016": {
        "kube_version": "v1.4.3",
        "kube_controller_node_monitor_grace_period": "40s",
        "kube_controller_node_monitor_period": "5s",
        "kubelet_status_update_frequency": "10s",
        "etcd_heartbeat_interval": "100",
        "etcd_election_timeout": "10000",
    },
    "today": {
        "kube_version": "1.36",
        "kube_controller_node_monitor_grace_period": "40s",
        "kube_controller_node_monitor_period": "5s",
        "kubelet_status_update_frequency": "10s",
        "etcd_heartbeat_interval": "250",
        "etcd_election_timeout": "5000",
        "kube_vip_leaseduration": 5,
        "kube_vip_renewdeadline": 3,
        "kube_vip_retryperiod": 1,
    },
}

#: kubespray variable -> (scenario key, how the value reads).
_TARGETS: Mapping[str, tuple[str, str]] = {
    "kube_controller_node_monitor_grace_period": (
        "controller_manager.node_monitor_grace_period", "duration"),
    "kube_controller_node_monitor_period": ("controller_manager.node_monitor_period", "duration"),
    "kubelet_status_update_frequency": ("kubelet.status_update_frequency", "duration"),
    # etcd's flags are milliseconds, written as strings in kubespray.
    "etcd_heartbeat_interval": ("etcd.heartbeat_interval", "ms"),
    "etcd_election_timeout": ("etcd.election_timeout", "ms"),
    "kube_vip_leaseduration": ("balancers.external.vip.lease_duration", "seconds"),
    "kube_vip_renewdeadline": ("balancers.external.vip.renew_deadline", "seconds"),
    "kube_vip_retryperiod": ("balancers.external.vip.retry_period", "seconds"),
}
_KUBE_VIP_KEYS = ("kube_vip_leaseduration", "kube_vip_renewdeadline", "kube_vip_retryperiod")


def era(rules: str) -> str:
    """``2016`` for the rule sets of the 2016 doc and code, else ``today``."""
    return "2016" if "2016" in rules else "today"


def parse_version(text: str, source: str, field_name: str) -> tuple[int, int]:
    """``v1.20.3``, ``1.20`` -> (1, 20); anything else is a :class:`ScenarioError`."""
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?", str(text).strip())
    if not m or int(m.group(1)) != 1:
        raise ScenarioError(f"{text!r} is not a Kubernetes version (expected 1.MINOR, "
                            "e.g. 1.29 or v1.29.3)", file=source, field=field_name)
    return int(m.group(1)), int(m.group(2))


def profile_for(version: tuple[int, int]) -> str:
    """The client profile of a Kubernetes version."""
    for bound, name in PROFILE_BOUNDS:
        if version[1] < bound:
            return name
    return "modern"


@dataclass(frozen=True)
class Knob:
    """One kubespray variable as the assessment uses it."""

    name: str
    value: Any
    #: ``inventory`` (set there), ``default`` (kubespray's, of the rule set's era) or
    #: ``command line``.
    source: str
    #: The scenario key it sets (None: it only picks the client profile).
    key: str | None = None
    #: The value in the scenario's unit (seconds), when it sets a key.
    setting: Any = None


@dataclass(frozen=True)
class Knobs:
    """The cluster's kubespray knobs, where each came from, and what they select."""

    knobs: list[Knob]
    kubernetes_version: str
    client_profile: str
    kube_vip: bool = False
    warnings: list[str] = field(default_factory=list)

    def overrides(self, with_vip: bool = False) -> dict[str, Any]:
        """Scenario keys for these knobs; kube-vip's only for a layout with kube-vip."""
        out: dict[str, Any] = {"clients.profile": self.client_profile}
        for k in self.knobs:
            if k.key is None or (k.name in _KUBE_VIP_KEYS and not with_vip):
                continue
            out[k.key] = k.setting
        return out

    def as_list(self) -> list[dict[str, Any]]:
        return [{"name": k.name, "value": k.value, "source": k.source} for k in self.knobs]


def _first_value(cluster: Cluster, name: str) -> Any:
    # kubespray reads these on the control plane (controller-manager, etcd) or on every
    # node (kubelet); an inventory sets them cluster-wide. The first master's value is
    # the one its control plane runs with.
    for h in (*cluster.masters, *cluster.hosts):
        if h.var(name) is not None:
            return h.var(name)
    return None


def _setting(raw: Any, how: str, source: str, name: str) -> float:
    try:
        if how == "ms":
            value = float(raw) / 1000.0
        elif how == "seconds":
            value = float(raw)
        else:
            value = float(parse_duration(raw))
    except (TypeError, ValueError):
        raise ScenarioError(f"{raw!r} is not a valid value for {name}", file=source,
                            field=name) from None
    if value <= 0:
        raise ScenarioError(f"{raw!r} must be positive", file=source, field=name)
    return value


def _pre_vote(cluster: Cluster, rules: str) -> Knob:
    """etcd's ``--pre-vote``: kubespray passes none, so etcd's own default holds unless
    ``etcd_extra_vars`` sets ``ETCD_PRE_VOTE`` (written into ``etcd.env``). The default
    follows etcd's version: on from 3.5 (today's ``etcd_version``), absent in the etcd
    of 2016 (and off by default up to 3.4)."""
    name = "etcd_extra_vars.ETCD_PRE_VOTE"
    extra = _first_value(cluster, "etcd_extra_vars")
    if isinstance(extra, Mapping) and "ETCD_PRE_VOTE" in extra:
        raw = extra["ETCD_PRE_VOTE"]
        text = str(raw).strip().lower()
        if text not in ("true", "false"):
            raise ScenarioError(f"{raw!r} is not a boolean for ETCD_PRE_VOTE (true or "
                                "false)", file=cluster.source, field=name)
        return Knob(name, raw, "inventory", "etcd.pre_vote", text == "true")
    on = era(rules) == "today"
    return Knob(name, "true" if on else "false", "default", "etcd.pre_vote", on)


def read_knobs(cluster: Cluster, rules: str, kubernetes_version: str | None = None) -> Knobs:
    """The knobs of ``cluster`` under ``rules`` (``kubernetes_version`` overrides the
    inventory's ``kube_version``). Bad values are a :class:`ScenarioError` naming the
    inventory and the variable."""
    defaults = _ERA_DEFAULTS[era(rules)]
    source = cluster.source
    knobs: list[Knob] = []
    if kubernetes_version is not None:
        version_text, version_source = kubernetes_version, "command line"
        parse_version(version_text, "--kubernetes-version", "--kubernetes-version")
    else:
        inv = _first_value(cluster, "kube_version")
        version_text, version_source = (str(inv), "inventory") if inv is not None else (
            str(defaults["kube_version"]), "default")
    version = parse_version(version_text, source, "kube_version")
    profile = profile_for(version)
    knobs.append(Knob("kube_version", version_text, version_source))
    kube_vip = bool(_first_value(cluster, "kube_vip_enabled") in (True, "true", "True", "yes"))
    for name, (key, how) in _TARGETS.items():
        if name not in defaults:
            continue
        raw = _first_value(cluster, name)
        where = "inventory"
        if raw is None:
            raw, where = defaults[name], "default"
        knobs.append(Knob(name, raw, where, key, _setting(raw, how, source, name)))
    knobs.append(_pre_vote(cluster, rules))
    return Knobs(knobs, f"{version[0]}.{version[1]}", profile, kube_vip)
