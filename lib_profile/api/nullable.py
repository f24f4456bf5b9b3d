"""The OpenAPI 3.0 schema FastAPI writes under pydantic 1, made valid OpenAPI 3.0.

* Optional fields documented as nullable: pydantic 1 writes ``Optional[float] = None`` as ``{"type": "number"}``, so
  a response carrying ``null`` (``"eta_s": null``) breaks its own documented schema; pydantic 2 already writes
  ``anyOf [..., null]``.
* No exclusive bounds as numbers: pydantic 1 writes ``gt=0`` as JSON Schema's ``"exclusiveMinimum": 0``, which
  OpenAPI 3.0 (FastAPI declares 3.0.2 under pydantic 1) would spell ``"minimum": 0, "exclusiveMinimum": true``;
  schema tools (schemathesis) refuse the number form, and FastAPI's own OpenAPI model turns ``true`` into ``1.0``.
  So the bound is documented as inclusive (``"minimum": 0``) with the extension ``"x-exclusiveMinimum": true``
  saying it is open (the field's description says so too); the value itself is still refused (400), and the
  refusal's words (``validation.allowed``) read the extension, so they say ``(0, 1)``. Under pydantic 2 FastAPI
  declares OpenAPI 3.1, where the number form is right.
"""

from __future__ import annotations

from typing import Any

import pydantic

PYDANTIC_1 = pydantic.VERSION.startswith("1.")
# the OpenAPI 3.0 specification extension that keeps an open bound open after it is written as minimum/maximum
EXCLUSIVE = {"exclusiveMinimum": "x-exclusiveMinimum", "exclusiveMaximum": "x-exclusiveMaximum"}


def _mark(schema: dict, model: Any) -> None:
    props = schema.get("properties", {})
    for field in model.__fields__.values():
        if field.allow_none and field.alias in props:
            props[field.alias]["nullable"] = True
    _openapi30_bounds(schema)


def _openapi30_bounds(node: Any) -> None:
    """Numeric ``exclusiveMinimum``/``exclusiveMaximum`` (JSON Schema) documented as the inclusive bound, in ``node``
    and everything under it."""
    if isinstance(node, dict):
        for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            value = node.get(bound)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                node.pop(bound)
                node.setdefault(plain, value)
                node[EXCLUSIVE[bound]] = True
        for child in node.values():
            _openapi30_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _openapi30_bounds(child)


def mark_nullable(namespace: dict) -> None:
    """Under pydantic 1, give every model class in ``namespace`` (a module's ``globals()``) a schema hook that
    adds ``"nullable": true`` to its fields that accept None (OpenAPI 3.0). Nothing under pydantic 2."""
    if not PYDANTIC_1:
        return
    for value in list(namespace.values()):
        if isinstance(value, type) and issubclass(value, pydantic.BaseModel) and value is not pydantic.BaseModel:
            value.__config__.schema_extra = staticmethod(_mark)
