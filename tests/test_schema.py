"""``hasim schema``: the JSON Schema of scenario files (from ``ScenarioSpec``), checked
with jsonschema against every shipped scenario, their resolved configs, and bad ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from hasim.cli import main
from hasim.spec.scenario import load_scenario
from hasim.spec.schema import scenario_schema

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted((ROOT / "scenarios").rglob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> Any:
    schema = scenario_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_cli_prints_the_schema(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(scenario_schema()))
    assert printed["$schema"].endswith("2020-12/schema")
    assert main(["schema", "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == printed


def test_library_has_every_folder() -> None:
    names = {p.relative_to(ROOT / "scenarios").as_posix() for p in FILES}
    assert {"incidents/ks2150.yaml", "incidents/k8s121793.yaml", "incidents/k8s48638.yaml",
            "incidents/ks5663.yaml", "incidents/ks655.yaml",
            "overhead/cluster-size.yaml", "modes/external-lb-2016.yaml",
            "modes/external-lb-2020-fix.yaml", "modes/external-keepalived.yaml"} <= names
    for kind in ("crash", "poweroff", "partition", "slow"):
        for mode in ("default-mode", "local-lb", "etcd-multiaccess", "external-lb",
                     "external-and-local-lb"):
            assert f"modes/{mode}-{kind}.yaml" in names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_scenario_file_validates(path: Path, validator: Any,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load(path.read_text())
    errors = [e.message for e in validator.iter_errors(doc)]
    assert not errors, errors
    # Round trip: the resolved config (every default written out) is valid too, and
    # loads back to the same scenario.
    scenario = load_scenario(path)
    resolved = scenario.resolved()
    assert not [e.message for e in validator.iter_errors(resolved)]
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("doc", [
    {"cluster": {"generate": {}}, "colour": "red"},                      # unknown key
    {"cluster": {"generate": {"nodes": "ten"}}},                          # wrong type
    {"cluster": {"generate": {}}, "duration": "10 minutes"},              # bad unit
    {"cluster": {"generate": {}}, "duration": -1},                        # negative
    {"cluster": {"generate": {}}, "balancers": {"local": {"kind": "envoy"}}},
    {"cluster": {"generate": {}}, "balancers": {"local": {"kind": "haproxy", "max_fails": 1}}},
    {"cluster": {"generate": {}}, "faults": [{"kind": "meteor", "at": "1s"}]},
    {"cluster": {"generate": {}}, "sweep": {"duration": "1m"}},
    {"duration": "1m"},                                                   # no cluster
])
def test_bad_documents_are_rejected(doc: dict[str, Any], validator: Any) -> None:
    assert list(validator.iter_errors(doc))


def test_durations_take_numbers_or_units(validator: Any) -> None:
    base: dict[str, Any] = {"cluster": {"generate": {}}}
    for value in (600, 0.5, "10m", "1m30s", "500ms", "1h30m", "90"):
        assert not list(validator.iter_errors({**base, "duration": value})), value
    for value in ("10 parsecs", "m", "", True):
        assert list(validator.iter_errors({**base, "duration": value})), value
