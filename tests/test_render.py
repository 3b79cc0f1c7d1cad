"""render-config: the configurations are kubespray's, with the scenario's parameters, and
the real nginx and HAProxy (Debian packages, installed by `make test`) accept them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import hasim
from hasim.graph.render import render_config

ROOT = Path(__file__).resolve().parents[1]
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def _scenario(name: str, overrides: dict[str, object] | None = None) -> hasim.Scenario:
    return hasim.load_scenario(ROOT / "scenarios" / name).with_overrides(overrides or {})


def test_nginx_conf_has_kubespray_stream_upstream() -> None:
    name, text = render_config(_scenario("local-lb.yaml"), "node1")
    assert name == "nginx.conf"
    # kubespray's template: least_conn over every master at access_ip:kube_apiserver_port;
    # the 2016 template listened on `kube_apiserver_port` (443) of every address.
    assert "least_conn;" in text
    for i in (1, 2, 3):
        assert f"server 10.0.0.{i}:443;" in text
    assert "listen        *:443;" in text
    assert "proxy_timeout 10m;" in text and "proxy_connect_timeout 1s;" in text
    assert "worker_processes 2;" in text


def test_nginx_conf_writes_non_default_passive_check_parameters() -> None:
    s = _scenario("local-lb.yaml", {"balancers.local.max_fails": 3,
                                    "balancers.local.fail_timeout": "5s",
                                    "balancers.local.proxy_timeout": "3s"})
    _, text = render_config(s, "node2")
    assert "server 10.0.0.1:443 max_fails=3 fail_timeout=5s;" in text
    assert "proxy_timeout 3s;" in text


def test_haproxy_local_cfg_is_kubesprays_template() -> None:
    s = _scenario("local-lb.yaml", {"balancers.local": {"kind": "haproxy"}})
    name, text = render_config(s, "node1")
    assert name == "haproxy.cfg"
    assert "balance leastconn" in text
    assert "default-server inter 15s downinter 15s rise 2 fall 2 slowstart 1m" in text
    assert "option httpchk GET /healthz" in text
    assert "server master1 10.0.0.1:443 check check-ssl verify none" in text
    assert "timeout connect         30s" in text and "timeout check           30s" in text
    assert "option                  redispatch" in text and "retries                 5" in text


def test_haproxy_external_2016_example_has_no_check_and_2020_fix_has() -> None:
    s = _scenario("external-lb.yaml")
    _, text = render_config(s, "extlb1")
    # The doc's example: bound at the VIP:8383, ssl-hello-chk, servers without `check`.
    assert "bind 10.0.0.100:8383" in text
    assert "option ssl-hello-chk" in text
    assert "server master1 10.0.0.1:443\n" in text
    assert " check" not in text.replace("ssl-hello-chk", "")
    fixed = s.with_overrides({"balancers.external.check": True, "balancers.external.inter": "10s"})
    _, text = render_config(fixed, "extlb1")
    assert "server master1 10.0.0.1:443 check check-ssl verify none inter 10000" in text


def test_host_without_balancer_is_an_error() -> None:
    with pytest.raises(hasim.ScenarioError, match="runs no load balancer"):
        render_config(_scenario("default-mode.yaml"), "node1")


@pytest.mark.parametrize(
    ("scenario", "host", "overrides"),
    [
        ("local-lb.yaml", "node1", {}),
        ("local-lb.yaml", "node1", {"balancers.local": {"kind": "haproxy"}}),
        ("external-lb.yaml", "extlb1", {}),
        ("external-lb.yaml", "extlb1", {"balancers.external.check": True}),
    ],
)
def test_real_software_accepts_the_configuration(
    tmp_path: Path, scenario: str, host: str, overrides: dict[str, object]
) -> None:
    name, text = render_config(_scenario(scenario, overrides), host)
    path = tmp_path / name
    if name == "nginx.conf":
        assert shutil.which("nginx"), "nginx is installed by `make test` (make system-deps)"
        # Debian builds the stream module as a dynamic module.
        path.write_text(f"load_module {STREAM_MODULE};\npid {tmp_path}/nginx.pid;\n" + text)
        cmd = ["nginx", "-t", "-c", str(path), "-e", str(tmp_path / "error.log")]
    else:
        assert shutil.which("haproxy"), "haproxy is installed by `make test` (make system-deps)"
        path.write_text(text)
        cmd = ["haproxy", "-c", "-f", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_prints_and_writes_the_same_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hasim.cli import main

    path = str(ROOT / "scenarios" / "local-lb.yaml")
    _, text = render_config(_scenario("local-lb.yaml"), "node1")
    assert main(["render-config", path, "--host", "node1"]) == 0
    assert capsys.readouterr().out == text
    assert main(["render-config", path, "--host", "node1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "nginx.conf").read_text() == text


def test_reuseport_is_rendered_when_set() -> None:
    _, text = render_config(_scenario("local-lb.yaml", {"balancers.local.reuseport": True}),
                            "node1")
    assert "listen        *:443 reuseport;" in text


def test_2026_local_lb_listens_on_loopback_and_ipv6_loopback_with_ipv6_stack() -> None:
    # Today's nginx.conf.j2 / haproxy.cfg.j2: `listen 127.0.0.1:{{ port }}`, and with
    # ipv6_stack also `[::1]:{{ port }}`.
    base = {"cluster.rules": "kubespray-2026-01"}
    _, text = render_config(_scenario("local-lb.yaml", base), "node1")
    assert "    listen        127.0.0.1:6443;\n    proxy_pass" in text
    dual = {**base, "cluster.vars.ipv6_stack": True}
    _, text = render_config(_scenario("local-lb.yaml", dual), "node1")
    assert "    listen        127.0.0.1:6443;\n    listen        [::1]:6443;\n" in text
    haproxy = {**dual, "balancers.local": {"kind": "haproxy"}}
    _, text = render_config(_scenario("local-lb.yaml", haproxy), "node1")
    assert "  bind 127.0.0.1:6443\n  bind [::1]:6443\n  mode tcp" in text


def test_cli_names_the_file_and_the_host_it_cannot_render(
    capsys: pytest.CaptureFixture[str]
) -> None:
    from hasim.cli import main

    path = str(ROOT / "scenarios" / "default-mode.yaml")
    assert main(["render-config", path, "--host", "node1"]) == 2
    err = capsys.readouterr().err
    assert "default-mode.yaml" in err and "--host" in err and "node1" in err
    assert "Traceback" not in err
