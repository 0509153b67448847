"""The value types of sweep-file keys, and pydantic's errors as :class:`SweepError`.

Each type is a pydantic type (strict: an integer is not a bool or a float, a number is
finite and not a string) with the phrase its failure reads as, so that an error names
the key by its dotted path and says what it must be:
`search.num_samples must be an integer >= 1, got 0`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

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

from lwmecps_rllib.validation import describe


class SweepError(ValueError):
    """A sweep file with an unknown key or a bad value; the message names the key."""


def must(text: str) -> WrapValidator:
    """Report any failure of the annotated type as `must be <text>` (the key is added)."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("must", "must be {must}", {"must": text}) from None

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
NonNegativeNumber = Annotated[StrictNumber, Field(ge=0), must("a number >= 0")]
OptionalNonNegativeNumber = Annotated[Annotated[StrictNumber, Field(ge=0)] | None,
                                      must("a number >= 0 or null")]
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


def sweep_error(exc: ValidationError, root: type[BaseModel]) -> SweepError:
    """Pydantic's first error as a :class:`SweepError` naming the dotted key (the project's
    one translation, :func:`lwmecps_rllib.validation.describe`).

    Args:
        exc: The error of validating `root`.
        root: The model of the whole file (for the keys and values a section allows).
    """
    return SweepError(describe(exc, "", root))
