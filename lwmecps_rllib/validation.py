"""One validation style for every spec the project reads: pydantic models, plain messages.

Env options, training specs, the Kubernetes backend config and the Serve arguments are
pydantic models derived from :class:`Spec`. :meth:`Spec.parse` turns pydantic's
`ValidationError` into a `ValueError` whose message names the field by its dotted
path and says what is allowed, e.g. `load_jitter must be a number in [0, 1), got 1.5`
or `unknown backend_config key 'namespac'; allowed: [...]`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="Spec")

#: Plain phrases for pydantic's error types.
_PHRASES = {
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "none_required": "must be null",
}


def describe(exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """The first error of `exc` as one sentence naming the field by its dotted path.

    Args:
        exc: The validation error.
        prefix: Dotted path of the validated object within a larger file (e.g.
            `backend_config`), prepended to the field names.
        model: The model that was validated (to list the keys and values allowed).

    Returns:
        `FIELD must be WHAT, got VALUE`, `unknown key FIELD; allowed: [...]`, or a
        validator's own sentence (which names its field itself; prefixed with `FIELD: `
        when it does not start with the field's name).
    """
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    # Unions name their member types in the location; drop those parts.
    loc = [p for p in loc if not (p[:1].isupper() or ("[" in p and p != "[key]")
                                  or p in ("str", "int", "float", "bool", "none"))]
    path = ".".join([prefix, *loc] if prefix else loc)
    kind, got = err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if loc[-1:] == ["[key]"]:  # a mapping's key, e.g. `params: {1: 0.5}`
        where = ".".join(([prefix] if prefix else []) + loc[:-2])
        return f"{where} keys must be strings, got {got!r}"
    if kind == "extra_forbidden":
        owner = _owner(model, loc[:-1])
        allowed = f"; allowed: {_keys(owner)}" if owner is not None else ""
        if len(loc) > 1:
            return f"unknown key {'.'.join(loc)}{allowed}"
        return f"unknown {prefix + ' ' if prefix else ''}key {loc[-1]!r}{allowed}"
    if kind == "missing":
        return f"{path} is required"
    if kind == "value_error":
        message = str(ctx.get("error", err["msg"]))
        if message.startswith("must"):
            return f"{path} {message}" + ("" if "got " in message else f", got {got!r}")
        if not loc or message.startswith((loc[-1], path, "unknown")):
            return message  # a whole sentence that names its field already
        return f"{path}: {message}"
    if kind == "model_type":
        owner = _owner(model, loc)
        of = f" of {_keys(owner)}" if owner is not None else ""
        return f"{path} must be a mapping{of}, got {got!r}"
    if kind == "literal_error":
        message = f"must be one of {_choices(model, loc, ctx)}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=",
              "less_than": "<"}[kind]
        message = f"must be {op} {next(iter(ctx.values()))}"
    else:  # a custom error type carries its own `must be ...` phrase
        message = _PHRASES.get(kind, err["msg"])
    return f"{path} {message}, got {got!r}"


def _keys(model: type[BaseModel]) -> list[str]:
    """The keys a model takes, as a file spells them (aliases), in declaration order."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _choices(model: type[BaseModel] | None, loc: list[str], ctx: dict) -> list[Any]:
    """The values a literal field allows."""
    owner = _owner(model, loc[:-1])
    if owner is not None and loc and loc[-1] in owner.model_fields:
        args = [a for a in _literals(owner.model_fields[loc[-1]].annotation) if a is not None]
        if args:
            return args
    return [x.strip().strip("'") for x in
            str(ctx.get("expected", "")).replace(" or ", ", ").split(",")]


def _literals(ann: Any) -> list[Any]:
    """The literal values inside an annotation (through unions and Annotated)."""
    if get_origin(ann) is Literal:
        return list(get_args(ann))
    out: list[Any] = []
    for a in get_args(ann):
        out += _literals(a)
    return out


def _owner(model: type[BaseModel] | None, loc: list[str]) -> type[BaseModel] | None:
    """The (sub)model at `loc` within `model`, when it can be found."""
    cur = model
    for part in loc:
        if cur is None or part not in cur.model_fields:
            return None
        ann = cur.model_fields[part].annotation
        subs = [a for a in (get_args(ann) or (ann,))
                if isinstance(a, type) and issubclass(a, BaseModel)]
        cur = subs[0] if subs else None
    return cur


class Spec(BaseModel):
    """Base of the project's specs: strict types, no unknown keys, plain error messages."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True,
                              arbitrary_types_allowed=True)
    #: Dotted prefix of this spec's fields in error messages (e.g. `backend_config`).
    error_prefix: ClassVar[str] = ""

    @classmethod
    def parse(cls: type[T], data: Any = None, prefix: str | None = None) -> T:
        """A checked spec from a mapping (or the spec itself).

        Raises:
            ValueError: naming the first bad or unknown field and what is allowed.
        """
        if isinstance(data, cls):
            return data
        if data is None:
            data = {}
        prefix = cls.error_prefix if prefix is None else prefix
        if not isinstance(data, dict):
            raise ValueError(f"{prefix or cls.__name__} must be a mapping of "
                             f"{sorted(cls.model_fields)}, got {data!r}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(describe(exc, prefix, cls)) from None

    def fields(self) -> dict[str, Any]:
        """The fields as given (nested specs kept as objects, unlike `model_dump`)."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    def replace(self: T, **changes: Any) -> T:
        """A checked copy with `changes` applied."""
        return type(self).parse({**self.fields(), **changes})


def finite(name: str, value: Any) -> float:
    """`value` as a float when it is a finite number (not a bool); else ValueError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)
