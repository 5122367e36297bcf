"""Validation of a JSON document against the subset of JSON Schema (2020-12) that
``docs/audit.schema.json`` uses.

The ``jsonschema`` package is not a dependency of the project, so the tests carry this small
validator instead. It knows ``type``, ``const``, ``enum``, ``required``, ``properties``,
``additionalProperties``, ``items``, ``allOf``, ``oneOf``, ``$ref`` (``#/$defs/…``),
``minimum``, ``maximum`` and ``pattern``, and refuses any other keyword, so the schema cannot
silently grow beyond what is checked.
"""

from __future__ import annotations

import re
from typing import Any

_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
_KNOWN = _ANNOTATIONS | {
    "type", "const", "enum", "required", "properties", "additionalProperties", "items",
    "allOf", "oneOf", "$ref", "minimum", "maximum", "pattern",
}  # fmt: skip


def _is_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise ValueError(f"unknown type {name!r} in the schema")


def errors(value: Any, schema: Any, root: dict[str, Any], path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema``, one line each (empty: valid)."""
    if schema is True:
        return []
    if schema is False:
        return [f"{path}: no value allowed here"]
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"{path}: schema keywords this validator does not check: {unknown}")
    found: list[str] = []
    if "$ref" in schema:
        prefix = "#/$defs/"
        if not schema["$ref"].startswith(prefix):
            raise ValueError(f"{path}: only {prefix}… references are supported")
        found += errors(value, root["$defs"][schema["$ref"][len(prefix) :]], root, path)
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, n) for n in names):
            return [*found, f"{path}: {value!r} is not of type {names}"]
    if "const" in schema and (value != schema["const"] or type(value) is not type(schema["const"])):
        found.append(f"{path}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and not any(
        value == option and type(value) is type(option) for option in schema["enum"]
    ):
        found.append(f"{path}: {value!r} is not one of {schema['enum']}")
    for sub in schema.get("allOf", []):
        found += errors(value, sub, root, path)
    if "oneOf" in schema:
        branches = [errors(value, s, root, path) for s in schema["oneOf"]]
        matching = sum(1 for branch in branches if not branch)
        if matching != 1:
            why = "; ".join(line for branch in branches for line in branch)
            found.append(f"{path}: matches {matching} of the oneOf schemas, not 1 ({why})")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        found.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                found.append(f"{path}: {key!r} is missing")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            where = f"{path}.{key}"
            found += errors(item, properties.get(key, extra), root, where)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += errors(item, schema["items"], root, f"{path}[{index}]")
    return found
