"""Bad input: exit code 2 and ONE line on stderr naming the file and the field, no traceback.

Each case writes a small bad file under ``tmp_path`` and runs the CLI in-process through
``hasim.cli.main``; the message must point the user at the place to fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hasim.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))

GOOD_CLUSTER = "cluster:\n  generate: {masters: 3, etcd: 3, nodes: 2}\n"


def _write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _one_error(capsys: pytest.CaptureFixture[str], *parts: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("hasim: error: ")
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"
    return line


def _run(argv: list[str]) -> int:
    return main(argv)


# --- the cluster cannot be evaluated ---------------------------------------------------------

CLUSTER_CASES = {
    "no-master": (
        "name: x\ncluster:\n  hosts:\n    n1: {ip: 10.0.0.1, groups: [kube-node, etcd]}\n",
        ["groups.kube-master", "no host in group kube-master"],
    ),
    "lb-without-address": (
        "name: x\n" + GOOD_CLUSTER + "  vars: {loadbalancer_apiserver: {port: 8383}}\n",
        ["loadbalancer_apiserver.address", "no 'address'"],
    ),
    "lb-not-a-map": (
        "name: x\n" + GOOD_CLUSTER + "  vars: {loadbalancer_apiserver: 10.0.0.100}\n",
        ["loadbalancer_apiserver:", "must be a map", "10.0.0.100"],
    ),
}


@pytest.mark.parametrize("command", ["endpoints", "topology", "validate"])
@pytest.mark.parametrize("case", CLUSTER_CASES)
def test_cluster_errors(
    case: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, parts = CLUSTER_CASES[case]
    path = _write(tmp_path, text)
    assert _run([command, str(path)]) == 2
    _one_error(capsys, str(path), *parts)


def test_no_master_in_an_inventory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = _write(tmp_path, "[kube-node]\nnode1 ip=10.0.0.1\n", "hosts.ini")
    assert _run(["endpoints", str(inv)]) == 2
    _one_error(capsys, str(inv), "groups.kube-master")


# --- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["endpoints", "topology"])
def test_path_that_does_not_exist(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-inventory"
    assert _run([command, str(missing)]) == 2
    _one_error(capsys, str(missing), "does not exist")


def test_scenario_inventory_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "name: x\ncluster:\n  inventory: ../no-such-inventory\n")
    assert _run(["endpoints", str(path)]) == 2
    # Relative to the scenario file, as docs/interfaces.md says.
    _one_error(capsys, str(path), "cluster.inventory", "does not exist",
               str(tmp_path.parent / "no-such-inventory"))


def test_validate_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["validate", str(tmp_path / "nope.yaml")]) == 2
    _one_error(capsys, "nope.yaml", "does not exist")


# --- YAML and schema -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: x\ncluster:\n  rules: a: b\n  generate: {masters: 1}\n", 3),
        ("name: x\n" + GOOD_CLUSTER + "faults:\n  - {at: 1s, target: master1, kind: crash\n"
         "duration: 10m\n", 6),
    ],
)
@pytest.mark.parametrize("command", ["endpoints", "validate"])
def test_malformed_yaml_names_the_line(
    text: str, line: int, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, text)
    assert _run([command, str(path)]) == 2
    _one_error(capsys, f"{path}:{line}:", "malformed YAML")


def test_unknown_rules_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "scenarios/local-lb.yaml"
    assert _run(["endpoints", str(path), "--rules", "nope"]) == 2
    _one_error(capsys, str(path), "rules", "'nope'", "ha-mode-2016", "kubespray-2026-01")


def test_unknown_rules_for_an_inventory(capsys: pytest.CaptureFixture[str]) -> None:
    inv = ROOT / "inventories/kubespray-2016"
    assert _run(["topology", str(inv), "--rules", "nope"]) == 2
    _one_error(capsys, str(inv), "rules", "'nope'")


@pytest.mark.parametrize("command", ["endpoints", "validate"])
def test_unknown_rules_in_the_scenario(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "name: x\ncluster:\n  rules: nope\n  generate: {masters: 1}\n")
    assert _run([command, str(path)]) == 2
    _one_error(capsys, f"{path}:3:", "cluster.rules", "'nope'", "known: ha-mode-2016")


@pytest.mark.parametrize(
    ("extra", "field", "line"),
    [
        ("clients: {profil: modern}\n", "clients.profil", 4),
        ("colour: red\n", "colour", 4),
        ("etcd: {heartbeat_interval: 100ms, election: 1s}\n", "etcd.election", 4),
    ],
)
def test_unknown_key(
    extra: str, field: str, line: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "name: x\n" + GOOD_CLUSTER + extra)
    assert _run(["validate", str(path)]) == 2
    _one_error(capsys, f"{path}:{line}:", f"{field}: unknown key")


def test_unknown_key_inside_a_balancer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "name: x\n" + GOOD_CLUSTER
                  + "balancers:\n  local: {kind: nginx, max_fail: 3}\n")
    assert _run(["validate", str(path)]) == 2
    _one_error(capsys, f"{path}:5:", "balancers.local", "max_fail", "unknown key")


@pytest.mark.parametrize(
    ("extra", "field", "line"),
    [
        ("duration: 10x\n", "duration", 4),
        ("balancers:\n  local: {kind: nginx, fail_timeout: 5 seconds}\n", "fail_timeout", 5),
    ],
)
def test_bad_duration_unit(
    extra: str, field: str, line: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "name: x\n" + GOOD_CLUSTER + extra)
    assert _run(["validate", str(path)]) == 2
    _one_error(capsys, f"{path}:{line}:", field, "bad duration", "unit")


@pytest.mark.parametrize(
    ("target", "shown"),
    [("master9", "'master9'"), ("kube-master[3]", "has 3 member(s)"),
     ("master1/nginx", "unknown component")],
)
def test_fault_target_that_does_not_exist(
    target: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "name: x\n" + GOOD_CLUSTER
                  + f"faults:\n  - {{at: 1s, target: \"{target}\", kind: crash}}\n")
    assert _run(["validate", str(path)]) == 2
    _one_error(capsys, f"{path}:5:", "faults[0].target", shown)


@pytest.mark.parametrize(
    ("key", "shown"),
    [("nope", "unknown key"), ("clients.nope", "unknown key"),
     ("balancers.external.nope", "unknown key")],
)
def test_sweep_over_an_unknown_key(
    key: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "name: x\n" + GOOD_CLUSTER + f"sweep:\n  {key}: [1, 2]\n")
    assert _run(["validate", str(path)]) == 2
    _one_error(capsys, str(path), f"sweep.{key}", shown)


@pytest.mark.parametrize(
    ("sweep", "field", "shown"),
    [
        ("duration: [10s, 10x]", "sweep.duration[1]", "bad duration"),
        ("cluster.vars.loadbalancer_apiserver: [{address: 10.0.0.9}, {port: 1}]",
         "sweep.cluster.vars.loadbalancer_apiserver[1]", "no 'address'"),
    ],
)
def test_validate_checks_every_sweep_value(
    sweep: str, field: str, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "name: x\n" + GOOD_CLUSTER + f"sweep:\n  {sweep}\n")
    assert _run(["validate", str(path)]) == 2
    _one_error(capsys, str(path), field, shown)


# --- validate on several files ---------------------------------------------------------------


def test_validate_every_shipped_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert SCENARIOS
    assert _run(["validate", *map(str, SCENARIOS)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert [ln.split(": ok (")[0] for ln in lines] == [str(p) for p in SCENARIOS]


def test_validate_several_files_one_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path, "name: x\n" + GOOD_CLUSTER + "duration: 10x\n")
    good = SCENARIOS[:2]
    assert _run(["validate", str(good[0]), str(bad), str(good[1])]) == 2
    out = capsys.readouterr().out
    # Every file is checked: the good ones after the bad one are still reported.
    assert [ln.split(": ok (")[0] for ln in out.splitlines()] == [str(p) for p in good]
    capsys.readouterr()
    assert _run(["validate", str(bad)]) == 2
    _one_error(capsys, str(bad), "duration")


def test_validate_reports_each_bad_file_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write(tmp_path, "name: x\n" + GOOD_CLUSTER + "duration: 10x\n", "a.yaml")
    b = _write(tmp_path, "name: x\ncluster:\n  rules: nope\n  generate: {masters: 1}\n", "b.yaml")
    assert _run(["validate", str(a), str(b)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert str(a) in err[0] and "duration" in err[0]
    assert str(b) in err[1] and "cluster.rules" in err[1]


def test_field_path_has_no_union_tag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "name: x\n" + GOOD_CLUSTER
                  + "balancers:\n  local: {kind: nginx, max_fail: 3}\n")
    assert _run(["validate", str(path)]) == 2
    _one_error(capsys, "balancers.local.max_fail: unknown key")
