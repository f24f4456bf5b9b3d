"""Optional fields documented as nullable in the OpenAPI schema under pydantic 1.

pydantic 1 writes ``Optional[float] = None`` as ``{"type": "number"}``, so a response carrying ``null``
(``"eta_s": null``) breaks its own documented schema; pydantic 2 already writes ``anyOf [..., null]``.
"""

from __future__ import annotations

from typing import Any

import pydantic

PYDANTIC_1 = pydantic.VERSION.startswith("1.")


def _mark(schema: dict, model: Any) -> None:
    props = schema.get("properties", {})
    for field in model.__fields__.values():
        if field.allow_none and field.alias in props:
            props[field.alias]["nullable"] = True


def mark_nullable(namespace: dict) -> None:
    """Under pydantic 1, give every model class in ``namespace`` (a module's ``globals()``) a schema hook that
    adds ``"nullable": true`` to its fields that accept None (OpenAPI 3.0). Nothing under pydantic 2."""
    if not PYDANTIC_1:
        return
    for value in list(namespace.values()):
        if isinstance(value, type) and issubclass(value, pydantic.BaseModel) and value is not pydantic.BaseModel:
            value.__config__.schema_extra = staticmethod(_mark)
