"""Bad input to ``hasim run`` and ``hasim validate``: exit 2, ONE line naming the field, no
traceback, and nothing already computed is lost.

The cases live in ``tests/malformed_cases.py`` (each a small file and the words its message
must contain). A Hypothesis test then mutates a valid scenario at random (keys, values,
types) and checks that the CLI never answers with a traceback: 0 or 2, nothing else.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hasim.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from malformed_cases import BASE, CASES  # noqa: E402


def _one_line(err: str, *parts: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hasim: error: "), lines[0]
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]


def test_there_are_at_least_30_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_and_run_reject_with_the_field(case: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    text, parts = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    line = _one_line(capsys.readouterr().err, str(path), *parts)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--executor", "serial", "-q"]) == 2
    # The same message from both commands, and no result directory was created.
    assert _one_line(capsys.readouterr().err, *parts) == line
    assert not out.exists()


@pytest.mark.parametrize("args, parts", [
    (["--set", "balancers.local.max_fail=2"], ["--set balancers.local.max_fail", "unknown key"]),
    (["--set", "duration=forever"], ["--set duration", "forever"]),
    (["--set", "duration"], ["--set", "key=value"]),
    (["--set", "faults.3.kind=crash"], ["--set faults.3.kind", "out of range"]),
    (["--set", "x=[1"], ["--set x", "YAML"]),
    (["--reps", "0"], ["--reps"]),
    (["--jobs", "0"], ["--jobs"]),
])
def test_bad_command_line_values(args: list[str], parts: list[str], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(BASE, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "-q", *args]) == 2
    _one_line(capsys.readouterr().err, *parts)
    assert not out.exists()


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    for cmd in (["validate", str(missing)], ["run", str(missing), "--out", str(tmp_path / "o")]):
        assert main(cmd) == 2
        _one_line(capsys.readouterr().err, str(missing), "does not exist")


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_bad_file_later_loses_nothing(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A result directory with results stays byte for byte intact when a later
    invocation into it names a bad file (even after good ones)."""
    good = tmp_path / "good.yaml"
    good.write_text(BASE, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["run", str(good), "--reps", "2", "--out", str(out), "--executor", "serial",
                 "-q"]) == 0
    before = _snapshot(out)
    assert any(k.startswith("failovers/") for k in before) and "runs.parquet" in before
    capsys.readouterr()
    for name in ("fault-host-unknown", "sweep-unknown-key", "yaml-unclosed"):
        bad = tmp_path / f"{name}.yaml"
        bad.write_text(CASES[name][0], encoding="utf-8")
        assert main(["run", str(good), str(bad), "--reps", "3", "--out", str(out),
                     "--executor", "serial", "-q"]) == 2
        _one_line(capsys.readouterr().err, str(bad))
        assert _snapshot(out) == before


# --- random mutations --------------------------------------------------------------------

BASE_DOC: dict[str, Any] = yaml.safe_load(BASE)
KEYS = ["name", "cluster", "generate", "masters", "nodes", "etcd", "vars", "balancers",
        "local", "external", "kind", "max_fails", "fail_timeout", "inter", "fall", "vip",
        "faults", "at", "target", "peers", "duration", "sweep", "seed", "replications",
        "clients", "profile", "kubelet", "lease_duration", "inventory", "hosts", "groups",
        "mtbf", "mttr", "targets", "rules", "fidelity", "cluster.generate.nodes",
        "balancers.local.fail_timeout", "faults.0.kind", "x.y", "", "0", "-1"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["10s", "5m", "0s", "-1s", "1h30m", "nginx", "haproxy", "crash",
                     "partition", "kube-master[0]", "kube-master[9]", "master1", "master9",
                     "kube-node", "all", "legacy", "random", "ha-mode-2016", "1e400", "."]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    max_leaves=6)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(BASE_DOC)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["set", "delete", "add"]))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        if not path:
            if action == "add":
                doc[draw(st.sampled_from(KEYS))] = draw(VALUES)
            continue
        last = path[-1]
        if action == "delete":
            del parent[last]
        elif action == "set":
            parent[last] = draw(VALUES)
        else:
            target = parent[last]
            if isinstance(target, dict):
                target[draw(st.sampled_from(KEYS))] = draw(VALUES)
            elif isinstance(target, list):
                target.append(draw(VALUES))
            else:
                parent[last] = draw(VALUES)
    return doc


@settings(max_examples=int(os.environ.get("HASIM_FUZZ_EXAMPLES", "120")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_random_mutations_never_give_a_traceback(doc: dict[str, Any]) -> None:
    """Any mutation of a valid scenario: ``validate`` and ``run --dry-run`` (which expands
    every sweep point) exit 0 or 2, and a 2 comes with one ``hasim: error:`` line."""
    import contextlib
    import io

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        for cmd in (["validate", str(path)], ["run", str(path), "--dry-run"]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(cmd)
            assert code in (0, 2), (cmd, code, err.getvalue())
            if code == 2:
                _one_line(err.getvalue())
