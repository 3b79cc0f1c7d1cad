"""The real nginx.conf and haproxy.cfg a scenario describes, as kubespray writes them.

Rendered from the topology graph (the same source the simulator instantiates), with the
scenario's balancer parameters:

- nginx: kubespray's ``roles/kubernetes/node/templates/loadbalancer/nginx.conf.j2`` (the
  ``stream`` upstream with ``least_conn``, ``proxy_timeout``, ``proxy_connect_timeout``);
  ``max_fails``/``fail_timeout`` are written on each server line when they differ from
  nginx's defaults;
- local HAProxy: kubespray's ``haproxy.cfg.j2`` (``mode tcp``, ``balance leastconn``,
  ``default-server inter 15s downinter 15s rise 2 fall 2 slowstart 60s ...``, ``option
  httpchk GET /healthz``, ``check check-ssl verify none``);
- external HAProxy: the 2016 HA doc's example (``option ssl-hello-chk``, servers without
  ``check``), or with ``check: true`` the 2020 fix (``check check-ssl verify none inter``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import networkx as nx

from hasim.errors import ScenarioError
from hasim.graph.topology import build_topology
from hasim.kubespray.endpoints import ipwrap
from hasim.spec.scenario import ExternalHAProxySpec, LocalHAProxySpec, NginxSpec, Scenario
from hasim.spec.units import format_duration


def _ms(seconds: float) -> str:
    return format_duration(seconds)


def balancer_node(g: nx.DiGraph, host: str) -> str:
    """The LB node of ``host`` in the graph (its local LB or its external LB instance)."""
    for comp in ("lb", "external-lb"):
        n = f"{host}/{comp}"
        if n in g:
            return n
    raise ScenarioError(
        f"host {host!r} runs no load balancer in this scenario", field="--host"
    )


def backends(g: nx.DiGraph, node: str) -> list[tuple[str, str, int]]:
    """(server name, address, port) of each upstream server, in upstream order."""
    out = []
    for v in g.successors(node):
        url = g.edges[node, v]["url"]
        parts = urlsplit(url)
        out.append((g.nodes[v]["host"], parts.hostname or "", int(parts.port or 443)))
    return out


def render_config(scenario: Scenario, host: str, listen: str | None = None,
                  servers: list[tuple[str, str, int]] | None = None) -> tuple[str, str]:
    """``(file name, text)`` of the LB configuration of ``host``.

    ``listen`` (``ADDRESS:PORT``) and ``servers`` replace the addresses the scenario
    gives, as the lab does to run the same configuration on loopback.
    """
    g = build_topology(scenario)
    node = balancer_node(g, host)
    d = g.nodes[node]
    servers = servers or backends(g, node)
    spec = scenario.spec.balancers
    if d["component"] == "lb":
        # Where the rule set says the LB listens (2016: every address; today: loopback,
        # plus [::1] with ipv6_stack), unless the caller moves it.
        binds = [listen] if listen else d.get("listen") or [f"127.0.0.1:{_listen_port(g, node)}"]
        if d.get("kind") == "nginx":
            return "nginx.conf", nginx_conf(spec.local_nginx(), servers, binds)
        return "haproxy.cfg", haproxy_local_cfg(spec.local_haproxy(), servers, binds)
    espec = spec.external_haproxy()
    ext = g.graph.get("external_lb", {})
    return "haproxy.cfg", haproxy_external_cfg(
        espec, servers, listen or f"{ext.get('address', '0.0.0.0')}:{ext.get('port', 443)}"
    )


def _listen_port(g: nx.DiGraph, node: str) -> int:
    # The port the host's clients dial on localhost: the first client edge into this node.
    for u in g.predecessors(node):
        port = g.edges[u, node].get("port")
        if port:
            return int(port)
    return 443


def nginx_conf(spec: NginxSpec, servers: list[tuple[str, str, int]],
               listen: str | Sequence[str]) -> str:
    """kubespray's nginx.conf for the local LB, with the scenario's parameters; one
    ``listen`` line per address (``ADDRESS:PORT``)."""
    binds = [listen] if isinstance(listen, str) else list(listen)
    reuse = " reuseport" if spec.reuseport else ""
    listens = "".join(f"    listen        {b}{reuse};\n" for b in binds)
    extra = ""
    if spec.max_fails != 1:
        extra += f" max_fails={spec.max_fails}"
    if spec.fail_timeout != 10.0:
        extra += f" fail_timeout={_ms(spec.fail_timeout)}"
    balance = "    least_conn;\n" if spec.balance == "least_conn" else ""
    lines = "".join(f"    server {ipwrap(addr)}:{port}{extra};\n" for _, addr, port in servers)
    nu = ""
    if not spec.proxy_next_upstream:
        nu += "    proxy_next_upstream off;\n"
    if spec.proxy_next_upstream_tries:
        nu += f"    proxy_next_upstream_tries {spec.proxy_next_upstream_tries};\n"
    if spec.proxy_next_upstream_timeout:
        nu += f"    proxy_next_upstream_timeout {_ms(spec.proxy_next_upstream_timeout)};\n"
    return f"""error_log stderr notice;

worker_processes {spec.workers};
worker_rlimit_nofile 130048;
worker_shutdown_timeout 10s;

events {{
  multi_accept on;
  use epoll;
  worker_connections 16384;
}}

stream {{
  upstream kube_apiserver {{
{balance}{lines}  }}

  server {{
{listens}    proxy_pass    kube_apiserver;
    proxy_timeout {_ms(spec.proxy_timeout)};
    proxy_connect_timeout {_ms(spec.proxy_connect_timeout)};
{nu}  }}
}}
"""


def _haproxy_timeouts(spec: Any) -> str:
    out = ""
    if spec.timeout_connect is not None:
        out += f"    timeout connect         {_ms(spec.timeout_connect)}\n"
    out += f"    timeout client          {_ms(spec.timeout_client)}\n"
    out += f"    timeout server          {_ms(spec.timeout_server)}\n"
    if spec.timeout_check is not None:
        out += f"    timeout check           {_ms(spec.timeout_check)}\n"
    return out


def _default_server(spec: Any) -> str:
    parts = [f"inter {_ms(spec.inter)}"]
    if spec.fastinter is not None and spec.fastinter != spec.inter:
        parts.append(f"fastinter {_ms(spec.fastinter)}")
    if spec.downinter is not None:
        parts.append(f"downinter {_ms(spec.downinter)}")
    parts += [f"rise {spec.rise}", f"fall {spec.fall}"]
    if spec.slowstart:
        parts.append(f"slowstart {_ms(spec.slowstart)}")
    if spec.shutdown_sessions:
        parts.append("on-marked-down shutdown-sessions")
    return " ".join(parts)


def _check_option(spec: Any) -> str:
    if spec.check_type == "httpchk":
        return "  option httpchk GET /healthz\n  http-check expect status 200\n"
    if spec.check_type == "ssl-hello-chk":
        return "  option ssl-hello-chk\n"
    return "  option tcp-check\n"


def _server_check(spec: Any) -> str:
    if not spec.check:
        return ""
    return " check check-ssl verify none" if spec.check_type == "httpchk" else " check"


def haproxy_local_cfg(spec: LocalHAProxySpec, servers: list[tuple[str, str, int]],
                      listen: str | Sequence[str]) -> str:
    """kubespray's haproxy.cfg for the local LB, with the scenario's parameters; one
    ``bind`` line per address."""
    binds = [listen] if isinstance(listen, str) else list(listen)
    bind_lines = "".join(f"  bind {b}\n" for b in binds)
    lines = "".join(f"  server {name} {ipwrap(addr)}:{port}{_server_check(spec)}\n"
                    for name, addr, port in servers)
    redispatch = "    option                  redispatch\n" if spec.redispatch else ""
    return f"""global
    maxconn                 4000

defaults
    mode                    tcp
{redispatch}    retries                 {spec.retries}
    timeout queue           5m
{_haproxy_timeouts(spec)}    maxconn                 4000

frontend kube_api_frontend
{bind_lines}  mode tcp
  default_backend kube_api_backend

backend kube_api_backend
  mode tcp
  balance {spec.balance}
  default-server {_default_server(spec)} maxconn 1000 maxqueue 256 weight 100
{_check_option(spec)}{lines}"""


def haproxy_external_cfg(spec: ExternalHAProxySpec, servers: list[tuple[str, str, int]],
                         listen: str) -> str:
    """The 2016 HA doc's external HAProxy (or the 2020 fix when ``check`` is on)."""
    check = ""
    if spec.check:
        check = f" check check-ssl verify none inter {int(spec.inter * 1000)}"
        if spec.fall != 3 or spec.rise != 2:
            check += f" rise {spec.rise} fall {spec.fall}"
    lines = "".join(f"    server {name} {ipwrap(addr)}:{port}{check}\n"
                    for name, addr, port in servers)
    redispatch = "    option redispatch\n" if spec.redispatch else ""
    retries = f"    retries {spec.retries}\n" if spec.retries != 3 else ""
    timeouts = ""
    if spec.timeout_connect is not None:
        timeouts += f"    timeout connect {_ms(spec.timeout_connect)}\n"
    if spec.timeout_check is not None:
        timeouts += f"    timeout check {_ms(spec.timeout_check)}\n"
    option = "    option ssl-hello-chk\n" if spec.check_type == "ssl-hello-chk" else (
        "    option httpchk GET /healthz\n" if spec.check_type == "httpchk" else "")
    return f"""listen kubernetes-apiserver-https
    bind {listen}
{option}    mode tcp
    timeout client {_ms(spec.timeout_client)}
    timeout server {_ms(spec.timeout_server)}
{timeouts}{redispatch}{retries}{lines}    balance {spec.balance}
"""
