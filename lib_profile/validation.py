"""Pydantic 1 (A1111) and 2 (Forge) alike: parse data into a model, dump what was set, and say what is wrong.

Every refusal names the field and what it allows, read from the model's own JSON schema (so the message and the
OpenAPI documentation cannot disagree): ``settings.steps: -5 is not allowed; allowed: an integer within 1..500``.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Optional, Sequence, Type, TypeVar

import pydantic
from pydantic import BaseModel

PYDANTIC_2 = int(pydantic.VERSION.split(".")[0]) >= 2
M = TypeVar("M", bound=BaseModel)


class Invalid(ValueError):
    """Data a model refused; ``str()`` names every bad field and what it allows (one line per field)."""

    def __init__(self, message: str, fields: Sequence[str] = ()):
        super().__init__(message)
        self.fields = list(fields)


def schema(model: Type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema (``definitions`` in pydantic 1, ``$defs`` in 2)."""
    return model.model_json_schema() if PYDANTIC_2 else model.schema()


def dump(obj: BaseModel, exclude_unset: bool = True) -> dict[str, Any]:
    """The model's fields as a dict; by default only those the data set (so defaults stay the plan's own)."""
    return obj.model_dump(exclude_unset=exclude_unset) if PYDANTIC_2 else obj.dict(exclude_unset=exclude_unset)


def parse(model: Type[M], data: Any, prefix: str = "") -> M:
    """``data`` (a mapping, a model instance or None) as ``model``. Raises :class:`Invalid` whose message names
    each bad field as ``prefix.field`` with what it allows."""
    if data is None:
        data = {}
    if isinstance(data, BaseModel):
        data = dump(data)
    if not isinstance(data, Mapping):
        raise Invalid(f"{prefix or 'the data'}: must be an object of named values, not {_show(data)}",
                      [prefix] if prefix else [])
    try:
        return model.model_validate(dict(data)) if PYDANTIC_2 else model.parse_obj(dict(data))
    except pydantic.ValidationError as exc:
        raise Invalid(*describe(exc.errors(), schema(model), data, prefix)) from None


def describe(errors: Iterable[Mapping[str, Any]], root: Mapping[str, Any], data: Any = None,
             prefix: str = "", whole: str = "the data") -> tuple[str, list[str]]:
    """(message, field paths) for pydantic/FastAPI errors: one line per bad field, naming it and what it allows.
    ``root``: the JSON schema the error locations start in; ``data``: the input (for the bad value)."""
    lines: list[str] = []
    seen: list[str] = []
    for err in errors:
        loc = [x for x in err.get("loc", ()) if not (isinstance(x, str) and x.startswith(("function-", "constrained-")))]
        path = _path([prefix] if prefix else [], loc) or whole
        if path in seen:  # one line a field (pydantic 2 may report each branch of a union)
            continue
        seen.append(path)
        kind = str(err.get("type", ""))
        node = _node(root, root, loc)
        if kind in ("value_error.extra", "extra_forbidden"):
            names = ", ".join(_properties(_node(root, root, loc[:-1]) or {}, root))
            lines.append(f"{path}: unknown field; allowed: {names}" if names else f"{path}: unknown field")
            continue
        if kind in ("value_error.missing", "missing"):
            lines.append(f"{path}: required" + (f"; allowed: {allowed(node, root)}" if node else ""))
            continue
        if kind in ("value_error.jsondecode", "json_invalid"):
            lines.append(f"the request body is not valid JSON ({err.get('msg')})")
            continue
        value = _value(data, loc)
        shown = f"{_show(value)} is not allowed" if value is not _MISSING else str(err.get("msg", "not allowed"))
        lines.append(f"{path}: {shown}" + (f"; allowed: {allowed(node, root)}" if node else f" ({err.get('msg')})"))
    return "\n".join(lines) or "invalid data", seen


def allowed(node: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """What a JSON schema node allows, in words: 'an integer, a multiple of 8, within 64..4096', 'null or a number
    within (0, 1]', 'one of: a, b'."""
    node = _resolve(node, root)
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        words = [allowed(o, root) for o in options]
        rest = [w for w in words if w != "null"]  # an optional field: null is its default, said by pydantic 2 only
        return " or ".join(rest or words)
    if "allOf" in node and len(node["allOf"]) == 1:
        return allowed({**node["allOf"][0]}, root)
    if "enum" in node:
        return "one of: " + ", ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    kind = node.get("type")
    if kind == "null":
        return "null"
    if kind == "object" and node.get("properties"):
        return "an object with: " + ", ".join(node["properties"])
    if kind == "object" and isinstance(node.get("additionalProperties"), Mapping):
        return "an object of names to " + _plural(allowed(node["additionalProperties"], root))
    if kind == "array":
        items = node.get("items")
        return "a list" + (f" of {_plural(allowed(items, root))}" if isinstance(items, Mapping) and items else "")
    noun = {"integer": "an integer", "number": "a number", "string": "text", "boolean": "true or false",
            "object": "an object"}.get(kind, "a value")
    if node.get("multipleOf"):
        noun += f" multiple of {_num(node['multipleOf'])}"
    parts = [noun]
    lo, hi = node.get("minimum"), node.get("maximum")
    xlo, xhi = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if node.get("x-exclusiveMinimum") is True:  # pydantic 1's OpenAPI 3.0 form of an open bound (api/nullable.py)
        lo, xlo = None, lo
    if node.get("x-exclusiveMaximum") is True:
        hi, xhi = None, hi
    if lo is not None or hi is not None or xlo is not None or xhi is not None:
        left = f"[{_num(lo)}" if lo is not None else f"({_num(xlo)}" if xlo is not None else "(-inf"
        right = f"{_num(hi)}]" if hi is not None else f"{_num(xhi)})" if xhi is not None else "inf)"
        if lo is not None and hi is not None:
            parts.append(f"within {_num(lo)}..{_num(hi)}")
        else:
            parts.append(f"within {left}, {right}")
    if node.get("minLength") or node.get("maxLength"):
        parts.append(f"of {node.get('minLength', 0)} to {node.get('maxLength', 'any number of')} characters")
    return " ".join(parts)


_MISSING = object()


def _plural(text: str) -> str:
    for a, b in (("an integer", "integers"), ("a number", "numbers"), ("true or false", "true or false"),
                 ("text", "text")):
        if text.startswith(a):
            return b + text[len(a):]
    return text


def _num(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else str(x)


def _path(prefix: list, loc: Sequence[Any]) -> str:
    out = ""
    for part in [*prefix, *loc]:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _value(data: Any, loc: Sequence[Any]) -> Any:
    for part in loc:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, (list, tuple)) and isinstance(part, int) and -len(data) <= part < len(data):
            data = data[part]
        else:
            return _MISSING
    return data


def _properties(node: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an object node, also when it is one option of an anyOf/allOf (an optional nested model)."""
    node = _resolve(node, root)
    if node.get("properties"):
        return dict(node["properties"])
    for key in ("allOf", "anyOf", "oneOf"):
        for option in node.get(key, ()):
            found = _properties(option, root)
            if found:
                return found
    return {}


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while isinstance(node, Mapping) and "$ref" in node and seen < 20:
        ref = node["$ref"].split("/")[-1]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        node = {**(root.get("$defs") or root.get("definitions") or {}).get(ref, {}), **extra}
        seen += 1
    return node


def _node(node: Optional[Mapping[str, Any]], root: Mapping[str, Any], loc: Sequence[Any]):
    """The schema node at ``loc`` (None when the schema does not say)."""
    for part in loc:
        if node is None:
            return None
        node = _child(_resolve(node, root), root, part)
    return _resolve(node, root) if node is not None else None


def _child(node: Mapping[str, Any], root: Mapping[str, Any], part: Any):
    for key in ("anyOf", "oneOf", "allOf"):
        for option in node.get(key, ()):
            found = _child(_resolve(option, root), root, part)
            if found is not None:
                return found
    if isinstance(part, int) and isinstance(node.get("items"), Mapping):
        return node["items"]
    if part in node.get("properties", {}):
        return node["properties"][part]
    if isinstance(node.get("additionalProperties"), Mapping):
        return node["additionalProperties"]
    return None
