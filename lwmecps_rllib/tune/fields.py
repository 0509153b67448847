"""The value types of sweep-file keys, and pydantic's errors as :class:`SweepError`.

Each type is a pydantic type (strict: an integer is not a bool or a float, a number is
finite and not a string) with the phrase its failure reads as, so that an error names
the key by its dotted path and says what it must be:
`search.num_samples must be an integer >= 1, got 0`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AllowInfNan,
    BaseModel,
    Field,
    Strict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError


class SweepError(ValueError):
    """A sweep file with an unknown key or a bad value; the message names the key."""


def must(text: str) -> WrapValidator:
    """Report any failure of the annotated type as `must be <text>` (the key is added)."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("sweep_value", "must be {must}", {"must": text}) from None

    return WrapValidator(check)


_Int = Annotated[int, Strict()]  # not a bool, not a float
#: A finite int or float, kept as given (not a bool, not a string).
StrictNumber = _Int | Annotated[float, Strict(), AllowInfNan(False)]

Int = Annotated[_Int, must("an integer")]
Count = Annotated[_Int, Field(ge=1), must("an integer >= 1")]
OptionalCount = Annotated[Annotated[_Int, Field(ge=1)] | None, must("an integer >= 1 or null")]
OptionalInt = Annotated[_Int | None, must("an integer or null")]
NonNegativeInt = Annotated[_Int, Field(ge=0), must("an integer >= 0")]
#: The range of `EnvOptions.load_jitter`; the phrase says it up front.
Jitter = Annotated[StrictNumber, must("a number in [0, 1)")]
PositiveNumber = Annotated[StrictNumber, Field(gt=0), must("a number > 0")]
NumberAboveOne = Annotated[StrictNumber, Field(gt=1), must("> 1")]
Flag = Annotated[bool, Strict(), must("True or False")]
Text = Annotated[str, Strict(), must("a string")]
Names = Annotated[list[Annotated[str, Strict()]] | None, must("a list of names or null")]
FolderName = Annotated[str, Strict(), Field(min_length=1, pattern=r"^[^/]+$"),
                       must("a non-empty folder name")]
ResultKey = Annotated[str, Strict(), Field(min_length=1), must("a result key")]
SearchAlgorithm = Literal["random", "grid", "optuna", "hyperopt"]
Scheduler = Literal["fifo", "asha"]
Mode = Annotated[Literal["max", "min"], must("'max' or 'min'")]
Trace = Annotated[Literal["a", "b"], must("'a' or 'b'")]


def _keys(model: type[BaseModel]) -> list[str]:
    """The keys a section takes, as the file spells them."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _section(root: type[BaseModel], path: list[str]) -> type[BaseModel]:
    """The model of the section at `path` under `root` (empty: `root`)."""
    model = root
    for part in path:
        model = model.model_fields[part].annotation
    return model


def sweep_error(exc: ValidationError, root: type[BaseModel]) -> SweepError:
    """Pydantic's first error as a :class:`SweepError` naming the dotted key.

    Args:
        exc: The error of validating `root`.
        root: The model of the whole file (for the keys and values a section allows).

    Returns:
        `KEY must be WHAT, got VALUE`, `unknown key KEY; allowed: [...]`,
        `KEY must be one of [...], got VALUE`, or a validator's own message (prefixed
        with `KEY: ` unless it is a :class:`SweepError`, which names its key itself).
    """
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    key, kind, got = ".".join(loc), err["type"], err.get("input")
    if kind == "value_error":  # raised by a validator
        cause = err["ctx"]["error"]
        if isinstance(cause, SweepError) or not key:
            return SweepError(str(cause))
        return SweepError(f"{key}: {cause}")
    if loc[-1:] == ["[key]"]:  # a mapping's key, e.g. `params: {1: 0.5}`
        return SweepError(f"{'.'.join(loc[:-2])} keys must be strings, got {got!r}")
    if kind == "sweep_value":
        return SweepError(f"{key} {err['msg']}, got {got!r}")
    if kind == "extra_forbidden":
        name = key if len(loc) > 1 else repr(key)
        return SweepError(f"unknown key {name}; allowed: {_keys(_section(root, loc[:-1]))}")
    if kind == "model_type":
        return SweepError(f"{key} must be a mapping of {_keys(_section(root, loc))}, "
                          f"got {got!r}")
    if kind == "literal_error":
        field = _section(root, loc[:-1]).model_fields[loc[-1]]
        return SweepError(f"{key} must be one of {list(get_args(field.annotation))}, "
                          f"got {got!r}")
    if kind == "dict_type":
        return SweepError(f"{key} must be a mapping, got {got!r}")
    return SweepError(f"{key}: {err['msg']}, got {got!r}")
