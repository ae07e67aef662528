"""Hyperparameters: the knobs tuned at every scale point, apart from the scale axes.

Each baseline declares its tunable knobs and their default ranges in its `tunable` class attribute; a sweep's
`hparams:` block (or `hparams: default`, those ranges) is drawn `draws` times, each value from a generator
seeded by the draw and the knob's name, as DomainBed's `hparams_registry` does, so adding a knob never changes
the draws of the others.
"""

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from testbed.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Values from `low` to `high`, uniform or (with `log`) log-uniform; integers if both ends are integers."""

    low: float
    high: float
    log: bool = False

    def draw(self, rng: random.Random) -> float | int:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return round(value) if isinstance(self.low, int) and isinstance(self.high, int) else value


Space = dict[str, Range | list]  # knob -> its range, or the list of its values


def parse_space(raw: Any, field: str) -> Space:
    """A sweep's `hparams` mapping (`key: [values]` or `key: {low, high, log}`) as a Space; ConfigError if bad."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{field}: must be 'default' or a mapping of config keys to [values] or {{low, high, log}}")
    space: Space = {}
    for key, spec in raw.items():
        name = f"{field}.{key}"
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"{name}: must be a non-empty list of values or {{low, high, log}}")
            space[key] = spec
            continue
        if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - {"low", "high", "log"}:
            raise ConfigError(f"{name}: a range needs low and high (and optionally log), or give a list of values")
        low, high, log = spec["low"], spec["high"], spec.get("log", False)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)) or low > high:
            raise ConfigError(f"{name}: low and high must be numbers with low <= high, got {low!r} and {high!r}")
        if not isinstance(log, bool):
            raise ConfigError(f"{name}.log: {log!r} is not allowed; choose one of true, false")
        if log and low <= 0:
            raise ConfigError(f"{name}: a log range needs low > 0, got {low!r}")
        space[key] = Range(low, high, log)
    return space


def draw_all(space: Space, draws: int | None, seed: int) -> list[dict[str, Any]]:
    """The hyperparameter draws: with `draws`, that many, each value seeded by (seed, draw, key); without, the
    grid of every combination of the lists (ranges need `draws`)."""
    if draws is None:
        if any(isinstance(v, Range) for v in space.values()):
            raise ConfigError("sweep.draws: required when sweep.hparams has ranges ({low, high}); e.g. draws: 3")
        return [dict(zip(space, combo)) for combo in itertools.product(*space.values())]
    rng = lambda i, key: random.Random(f"{seed}/{i}/{key}")  # noqa: E731
    return [{key: spec.draw(rng(i, key)) if isinstance(spec, Range) else rng(i, key).choice(spec)
             for key, spec in space.items()} for i in range(draws)]
