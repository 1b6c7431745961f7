"""One readable line for a pydantic validation error: the dotted key, what is allowed, what was found.

Example:
    >>> from pydantic import ValidationError
    >>> from taskology.config.sections import ExperimentConfig
    >>> try:
    ...     ExperimentConfig.model_validate({"train": {"stpes": 5}})
    ... except ValidationError as exc:
    ...     print(describe_validation_error(exc, ExperimentConfig))  # doctest: +ELLIPSIS
    train.stpes: unknown key; allowed: steps, mode, seeds, ...
"""
from __future__ import annotations

from typing import Annotated, Any, Sequence, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


def _unwrap(annotation: Any) -> Any:
    """``Optional[X]`` -> ``X``; ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union:
            args = [a for a in get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        else:
            return annotation


def _locate(model: type[BaseModel], loc: Sequence[Any]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model that holds the last key of ``loc`` and that key's field (None where not a field)."""
    current: Any = model
    parent: type[BaseModel] | None = None
    field: FieldInfo | None = None
    for key in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            parent, field = current, current.model_fields.get(str(key))
            if field is None:
                return parent, None
            current = field.annotation
        elif get_origin(current) is dict:
            parent, field = None, None
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return parent, field
    return parent, field


def _constraints(annotation: Any) -> list[Any]:
    """Every constraint object (``Gt``, ``Le``, ...) inside an annotation, through Optional/Annotated/list."""
    found: list[Any] = []
    origin = get_origin(annotation)
    if origin is Annotated:
        found += _constraints(get_args(annotation)[0])
        for meta in get_args(annotation)[1:]:
            found += list(meta.metadata) if isinstance(meta, FieldInfo) else [meta]
    elif origin in (Union, list):
        for arg in get_args(annotation):
            found += _constraints(arg)
    return found


_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_CTX_BOUNDS = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def _bounds(field: FieldInfo | None) -> str:
    """``"> 0 and <= 1"`` from a field's numeric constraints (also those of Optional/list items)."""
    if field is None:
        return ""
    parts = []
    for meta in list(field.metadata) + _constraints(field.annotation):
        attr = type(meta).__name__.lower()
        if attr in _SYMBOLS and getattr(meta, attr, None) is not None:
            parts.append(f"{_SYMBOLS[attr]} {getattr(meta, attr)}")
    return " and ".join(dict.fromkeys(parts))


_TYPE_WORDS = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
               "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
               "model_type": "a mapping (section)", "model_attributes_type": "a mapping (section)",
               "path_type": "a path", "none_required": "null"}


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line for a pydantic error: ``dotted.key: what is wrong; what is allowed; found what``."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    ctx = first.get("ctx") or {}
    kind = first["type"]
    if kind == "taskology" and ctx.get("key"):
        loc.append(str(ctx["key"]))
    key = ".".join(loc) or "(top level)"
    found = first.get("input")
    parent, field = _locate(model, first["loc"])
    if kind == "extra_forbidden":
        allowed = ", ".join(parent.model_fields) if parent is not None else "?"
        text = f"unknown key; allowed: {allowed}"
    elif kind == "taskology":
        text = str(ctx["message"])
    elif kind == "literal_error":
        text = f"expected one of {ctx.get('expected', '?')}; found {found!r}"
    elif kind in _CTX_BOUNDS:
        attr = _CTX_BOUNDS[kind]
        text = f"must be {_bounds(field) or _SYMBOLS[attr] + ' ' + str(ctx.get(attr))}; found {found!r}"
    elif kind in ("too_short", "too_long"):
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        text = f"expected {'at least' if kind == 'too_short' else 'at most'} {limit} item(s); found {found!r}"
    elif kind == "missing":
        text = "missing; this key is required"
    elif kind in _TYPE_WORDS or kind.endswith("_type") or kind.endswith("_parsing"):
        bounds = _bounds(field)
        expected = _TYPE_WORDS.get(kind, first["msg"].removeprefix("Input should be ").lower())
        text = f"expected {expected}{' ' + bounds if bounds else ''}; found {found!r} ({type(found).__name__})"
    else:
        text = f"{first['msg']}; found {found!r}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{key}: {text}{more}"
