"""Input validation that fails with one line naming the field and what is allowed.

These are the checks the built-in environments and baselines use, and they are public: a plug-in environment calls
them in its `__init__` (`check_unit("label_noise", label_noise)`), and `testbed fit --data.label_noise 2` then stops
before anything is written with `testbed: error: data.label_noise: 2.0 is outside the allowed range [0, 1]` and
exit status 2, as it does for `SpuriousShapes`.
"""

from collections.abc import Iterable


class ConfigError(ValueError):
    """A user-facing configuration error; the CLI prints it as one line and exits with status 2."""


def check_unit(field: str, value: float | Iterable[float]) -> None:
    """Every value must be a probability in [0, 1]."""
    for v in value if isinstance(value, Iterable) else [value]:
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{field}: {v} is outside the allowed range [0, 1]")


def check_range(field: str, value: float, low: float, high: float) -> None:
    """`value` must lie in [low, high]."""
    if not low <= value <= high:
        raise ConfigError(f"{field}: {value} is outside the allowed range [{low}, {high}]")


def check_positive(field: str, value: int | float) -> None:
    """A size or a rate: `value` must be above zero."""
    if value <= 0:
        raise ConfigError(f"{field}: {value} is not allowed; it must be a positive number")


def check_keys(source: str, block: dict, allowed: list[str]) -> None:
    """A mapping read from a file (the sweep, its `cluster:` block): every key must be one of `allowed`."""
    for key in block:
        if key not in allowed:
            raise ConfigError(f"{source}.{key}: unknown key; allowed keys are {', '.join(allowed)}")


def check_choice(field: str, value: object, allowed: Iterable[object]) -> None:
    """`value` must be one of `allowed`."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{field}: {value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")
