"""Input validation that fails with one line naming the field and what is allowed."""

from collections.abc import Iterable


class ConfigError(ValueError):
    """A user-facing configuration error; the CLI prints it as one line and exits with status 2."""


def check_unit(field: str, value: float | Iterable[float]) -> None:
    """Every value must be a probability in [0, 1]."""
    for v in value if isinstance(value, Iterable) else [value]:
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{field}: {v} is outside the allowed range [0, 1]")


def check_positive(field: str, value: int | float) -> None:
    if value <= 0:
        raise ConfigError(f"{field}: {value} is not allowed; it must be a positive number")


def check_choice(field: str, value: object, allowed: Iterable[object]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{field}: {value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")
