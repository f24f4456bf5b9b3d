"""Every response/request field that may be null says so in the OpenAPI schema, under pydantic 1 and 2 (a
response with ``"eta_s": null`` must match its own documented schema; the API fuzzer in .ci/fuzz checks it)."""

import typing

from pydantic import BaseModel

from lib_profile.api import models as api_models
from lib_profile.serve import make_app


def allows_null(schema: dict) -> bool:
    if schema.get("nullable") or schema.get("type") == "null":
        return True
    return any(allows_null(s) for s in schema.get("anyOf", []) + schema.get("oneOf", []))


def optional_fields(model) -> set:
    hints = typing.get_type_hints(model)
    return {name for name, hint in hints.items()
            if type(None) in typing.get_args(hint) and not name.startswith("_")}


def test_optional_fields_are_nullable_in_openapi():
    schemas = make_app(lambda: None, ui=False).openapi()["components"]["schemas"]
    models = [v for v in vars(api_models).values() if isinstance(v, type) and issubclass(v, BaseModel) and v is not BaseModel
              and v.__module__ == api_models.__name__]
    checked = 0
    for model in models:
        if model.__name__ not in schemas:
            continue
        props = schemas[model.__name__].get("properties", {})
        for name in optional_fields(model):
            assert allows_null(props[name]), (model.__name__, name, props[name])
            checked += 1
        for name in set(props) - optional_fields(model):
            assert not props[name].get("nullable"), (model.__name__, name)
    assert checked >= 20


def test_exclusive_bounds_are_in_the_form_the_declared_openapi_version_reads():
    """OpenAPI 3.0 (FastAPI under pydantic 1) has boolean exclusive bounds; 3.1 (pydantic 2) numeric ones. A numeric
    ``exclusiveMinimum`` in a 3.0 document made schemathesis refuse train, explain, edit and portraits."""
    spec = make_app(lambda: None, ui=False).openapi()
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for key in ("exclusiveMinimum", "exclusiveMaximum"):
                if key in node and spec["openapi"].startswith("3.0") and not isinstance(node[key], bool):
                    found.append(f"{where}.{key}={node[key]!r}")
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(spec, "")
    assert not found, found[:5]
    text = str(spec)
    assert "Local blend mask threshold" in text and "'maximum': 1.0" in text  # the bounds are still documented
