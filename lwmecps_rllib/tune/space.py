"""The search space: Tune's distributions by name, their checks, and the Tune domains.

A sweep file's `search_space` maps each searched parameter to a fixed value or to one
distribution and its arguments::

    search_space:
      learning_rate: {loguniform: [1.0e-4, 3.0e-3]}
      discount_factor: {uniform: [0.9, 0.99]}
      epsilon: {choice: [0.1, 0.2, 0.3]}
      num_epochs: {grid: [4, 8]}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from lwmecps_rllib.tune.fields import StrictNumber, SweepError

if TYPE_CHECKING:
    from lwmecps_rllib.tune.schema import SweepConfig

#: Search-space distributions: name -> number of arguments (None: a list of values).
DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "quniform": 3, "qloguniform": 3,
                 "randint": 2, "choice": None, "grid": None}
_NUMBERS = TypeAdapter(list[StrictNumber])


def spec_kind(spec: Any) -> str:
    """The distribution of a search-space entry, or `value` for a fixed value."""
    return next(iter(spec)) if isinstance(spec, dict) else "value"


def extremes(key: str, spec: Any) -> list[Any]:
    """Check a search-space entry; the values it reaches at its ends.

    Args:
        key: The entry's dotted key (`search_space.NAME`), for messages.
        spec: A fixed value or `{distribution: arguments}`.

    Returns:
        The values to check against the parameter: the fixed value, every listed value
        (`choice`, `grid`), or the lowest and highest value of a range.

    Raises:
        SweepError: an unknown distribution or bad arguments, naming `key`.
    """
    if not isinstance(spec, dict):
        return [spec]
    if len(spec) != 1 or spec_kind(spec) not in DISTRIBUTIONS:
        raise SweepError(f"{key} must be a value or one of {{{', '.join(DISTRIBUTIONS)}}}: "
                         f"args, got {spec!r}")
    kind, args = next(iter(spec.items()))
    n = DISTRIBUTIONS[kind]
    if n is None:
        if not isinstance(args, list) or not args:
            raise SweepError(f"{key}.{kind} must be a non-empty list of values, got {args!r}")
        return list(args)
    if not (isinstance(args, list) and len(args) == n and _are_numbers(args)):
        names = "[low, high, q]" if n == 3 else "[low, high]"
        raise SweepError(f"{key}.{kind} must be {names} (numbers), got {args!r}")
    low, high = args[0], args[1]
    if not low < high:
        raise SweepError(f"{key}.{kind}: low must be < high, got {low} >= {high}")
    if "log" in kind and low <= 0:
        raise SweepError(f"{key}.{kind}: low must be > 0 on a log scale, got {low}")
    if kind == "randint":
        if not (isinstance(low, int) and isinstance(high, int)):
            raise SweepError(f"{key}.randint bounds must be integers, got {args!r}")
        return [low, high - 1]
    if n == 3 and args[2] <= 0:
        raise SweepError(f"{key}.{kind}: q must be > 0, got {args[2]}")
    return [low, high]


def _are_numbers(args: list[Any]) -> bool:
    try:
        _NUMBERS.validate_python(args)
    except ValidationError:
        return False
    return True


def grid_values(cfg: SweepConfig, spec: Any) -> list[Any] | None:
    """The values of a search-space entry Tune crosses as a grid, else None.

    `grid` entries, and `choice` entries under `search.algorithm: grid`. Optuna and
    HyperOpt sweeps have none: validation refuses `grid` there.
    """
    kind = spec_kind(spec)
    if kind == "grid" or (kind == "choice" and cfg.search.algorithm == "grid"):
        return list(spec[kind])
    return None


def search_space(cfg: SweepConfig) -> dict[str, Any]:
    """The Tune param space: every searched name -> a Tune domain (or a fixed value)."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, spec in cfg.search_space.items():
        kind = spec_kind(spec)
        if kind == "value":
            out[name] = spec
        elif (values := grid_values(cfg, spec)) is not None:
            out[name] = tune.grid_search(values)
        elif kind == "choice":
            out[name] = tune.choice(list(spec[kind]))
        else:
            out[name] = getattr(tune, kind)(*spec[kind])
    return out


def expected_trials(cfg: SweepConfig) -> int:
    """Trials the sweep makes: `num_samples`, times the grid sizes for Tune's generator."""
    n = cfg.search.num_samples
    for spec in cfg.search_space.values():
        values = grid_values(cfg, spec)
        if values is not None:
            n *= len(values)
    return n
