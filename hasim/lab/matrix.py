"""The calibration matrix: load balancer x fault kind x timings, as scenarios.

One node (``node1``) with a local LB in front of three masters; the fault hits the first
master (``kube-master[0]``, the first server of the upstream) 1.2 s after the LB starts
(see :func:`lab_scenario`).
``crash`` kills the apiserver; ``blackhole`` cuts it from the node (a ``partition``
between ``kube-master[0]`` and ``kube-node``; in the lab: iptables DROP of its address).
HAProxy cells fault after one check interval (:func:`lab_scenario`).

- ``quick`` (the tests): short timings (nginx ``fail_timeout 3s``; HAProxy ``inter 1s``,
  ``fall 2``, ``rise 2``), permanent faults.
- ``full`` (``make calibrate``): ``quick``, kubespray's own timings (nginx defaults:
  ``fail_timeout 10s``; kubespray's local HAProxy: ``inter 15s``, ``fall 2``), and the
  short timings with a fault that heals after 4 s (recovery).
"""

from __future__ import annotations

from typing import Any

from hasim.spec.scenario import LocalHAProxySpec, Scenario, scenario_from_dict
from hasim.spec.units import parse_duration

NGINX_SHORT: dict[str, Any] = {"kind": "nginx", "fail_timeout": "3s"}
HAPROXY_SHORT: dict[str, Any] = {"kind": "haproxy", "inter": "1s", "fastinter": "1s",
                                 "downinter": "1s", "rise": 2, "fall": 2}
NGINX_KUBESPRAY: dict[str, Any] = {"kind": "nginx"}
HAPROXY_KUBESPRAY: dict[str, Any] = {"kind": "haproxy"}

FAULTS: dict[str, dict[str, Any]] = {
    "crash": {"kind": "crash", "target": "kube-master[0]"},
    "blackhole": {"kind": "partition", "target": "kube-master[0]", "peers": "kube-node"},
}


def lab_scenario(lb: dict[str, Any], fault: str, name: str | None = None,
                 at: float | None = None, duration: float | None = None) -> Scenario:
    """A one-node scenario for the lab: ``lb`` (``balancers.local``) and one fault.

    The fault comes 1.2 s after the LB starts, or for HAProxy 0.2 s after its first
    check interval: HAProxy starts a server at ``rise`` (one failure from DOWN,
    ``srv_settings_cpy``) and only its first passed check makes it fully healthy, so an
    earlier fault would measure the start-up, not a running cluster."""
    if at is None:
        at = 1.2
        if lb.get("kind") == "haproxy":
            at = parse_duration(lb.get("inter", LocalHAProxySpec.model_validate({}).inter)) + 0.2
    f: dict[str, Any] = {**FAULTS[fault], "at": at}
    if duration is not None:
        f["duration"] = duration
    return scenario_from_dict({
        "name": name or f"lab-{lb['kind']}-{fault}",
        "cluster": {"generate": {"masters": 3, "etcd": 3, "nodes": 1},
                    "vars": {"loadbalancer_apiserver_localhost": True}},
        "balancers": {"local": lb},
        "network": {"rtt": "0.1ms"},
        "faults": [f],
        "duration": "10m",
    })


def calibration_matrix(which: str = "quick") -> list[Scenario]:
    """The cells of the ``quick`` or ``full`` matrix."""
    cells = [lab_scenario(lb, fault, f"{lb['kind']}-short-{fault}")
             for lb in (NGINX_SHORT, HAPROXY_SHORT) for fault in ("crash", "blackhole")]
    if which == "quick":
        return cells
    if which != "full":
        raise ValueError(f"unknown matrix {which!r}: quick or full")
    cells += [lab_scenario(lb, fault, f"{lb['kind']}-kubespray-{fault}")
              for lb in (NGINX_KUBESPRAY, HAPROXY_KUBESPRAY) for fault in ("crash", "blackhole")]
    cells += [lab_scenario(lb, fault, f"{lb['kind']}-short-{fault}-heals", duration=4.0)
              for lb in (NGINX_SHORT, HAPROXY_SHORT) for fault in ("crash", "blackhole")]
    return cells
