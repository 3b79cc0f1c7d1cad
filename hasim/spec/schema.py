"""The JSON Schema of a scenario file, from the pydantic model ``ScenarioSpec``.

Editors use it to complete and check scenario files (YAML language servers read a
``# yaml-language-server: $schema=...`` comment). pydantic's schema is adjusted where the
model accepts more than its Python type says:

- durations (``Duration`` fields) are a number of seconds OR a string with units
  (``10s``, ``500ms``, ``1m30s``), as :func:`hasim.spec.units.parse_duration` reads them;
- ``name`` may be left out (it defaults to the file's stem);
- pydantic's non-standard ``gt`` becomes JSON Schema's ``exclusiveMinimum``.

The schema checks structure and types; what needs the cluster (fault targets naming
hosts, endpoint rules) is left to ``hasim validate``.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel, BeforeValidator

from hasim.spec.scenario import ScenarioSpec

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
#: What :func:`hasim.spec.units.parse_duration` accepts as text: a number of seconds, or
#: numbers with units, possibly compound (``1h30m``).
DURATION_PATTERN = (
    r"^ *(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+) *"
    r"|(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+) *(?:us|ms|s|m|h|d) *)+)$"
)


def _is_duration_marker(m: Any) -> bool:
    return isinstance(m, BeforeValidator) and getattr(m.func, "__name__", "") == "_duration"


def _annotated_duration(tp: Any) -> bool:
    if typing.get_origin(tp) is typing.Annotated:
        return any(_is_duration_marker(m) for m in tp.__metadata__)
    return any(_annotated_duration(a) for a in typing.get_args(tp))


def _is_duration(field: Any) -> bool:
    """A ``Duration`` field, optional ones (``Duration | None``) included."""
    return (any(_is_duration_marker(m) for m in field.metadata)
            or _annotated_duration(field.annotation))


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from ``root``, by class name (pydantic's ``$defs`` keys)."""
    found: dict[str, type[BaseModel]] = {}

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp.__name__ in found:
                return
            found[tp.__name__] = tp
            for f in tp.model_fields.values():
                visit(f.annotation)
            return
        for arg in typing.get_args(tp):
            visit(arg)

    visit(root)
    return found


def _duration_schema(node: Any) -> Any:
    """Replace each ``{"type": "number"}`` in a field's schema with number-or-text."""
    if isinstance(node, dict):
        if node.get("type") == "number":
            num: dict[str, Any] = {"type": "number", "minimum": 0}
            if "gt" in node or "exclusiveMinimum" in node:
                num = {"type": "number", "exclusiveMinimum": node.get("gt", 0)}
            text = {"type": "string", "pattern": DURATION_PATTERN}
            rest = {k: v for k, v in node.items()
                    if k not in {"type", "gt", "exclusiveMinimum", "minimum"}}
            return {**rest, "anyOf": [num, text]}
        return {k: _duration_schema(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_duration_schema(v) for v in node]
    return node


def _gt(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _gt(v) for k, v in node.items() if k != "gt"}
        if "gt" in node:
            out["exclusiveMinimum"] = node["gt"]
        return out
    if isinstance(node, list):
        return [_gt(v) for v in node]
    return node


def scenario_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a scenario file."""
    schema: dict[str, Any] = ScenarioSpec.model_json_schema(mode="validation")
    models = _models(ScenarioSpec)
    defs = schema.get("$defs", {})
    for name, model in models.items():
        target = schema if model is ScenarioSpec else defs.get(name)
        if target is None:
            continue
        props = target.get("properties", {})
        for fname, field in model.model_fields.items():
            key = field.alias or fname
            if key in props and _is_duration(field):
                props[key] = _duration_schema(props[key])
                props[key]["description"] = (
                    "seconds: a number, or text with units (us, ms, s, m, h, d), e.g. 10s, "
                    "500ms, 1m30s")
    schema = _gt(schema)
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    return {
        "$schema": SCHEMA_URI,
        "$id": "https://hasim.invalid/scenario.schema.json",
        **{k: v for k, v in schema.items() if k not in {"$schema", "$id"}},
        "title": "hasim scenario",
    }


def schema_json(indent: int = 2) -> str:
    """The scenario JSON Schema as text."""
    return json.dumps(scenario_schema(), indent=indent, sort_keys=False)
