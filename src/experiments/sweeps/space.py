"""The search space: Hydra's sweep syntax in, Optuna distributions out, and trial values back to overrides.

A sweep names its ranges the way Hydra's override grammar writes them, so the same text works in a
preset, on the command line and in ``hydra.sweeper.params``:

* ``interval(a, b)`` -> a float drawn uniformly from [a, b]; ``tag(log, interval(a, b))`` log-uniformly;
* ``choice(x, y, ...)`` or ``x,y,...`` -> one of the values (categorical);
* ``range(start, stop[, step])`` -> one of Hydra's range values (``stop`` excluded, as in Hydra), an
  ordered integer or float grid; ``shuffle(range(...))`` is categorical;
* anything else (``key=value``, ``+key=value``, ``~key``) is fixed: every trial gets it as it is.

Parsing goes through Hydra's own ``OverridesParser``; a range Optuna cannot draw from (a log range
through zero, an empty interval) is one :class:`~experiments.core.errors.UserError`, raised before the
sweep writes anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from experiments.core.errors import UserError

PARAMS_KEY = "hydra.sweeper.params"
_NEEDS_QUOTES = set(" ,'\"()[]{}=:\\$")


@dataclass
class SearchSpace:
    """What each trial draws (``distributions``, in declared order) and what every trial gets as is."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str | None] = field(default_factory=dict)  # key -> value text (None: ``~key``)

    def overrides_for(self, params: dict[str, Any]) -> list[str]:
        """One trial's overrides: its drawn values in declared order, then the fixed ones."""
        drawn = [f"{key}={format_value(params[key])}" for key in self.distributions]
        fixed = [key if value is None else f"{key}={value}" for key, value in self.fixed.items()]
        return drawn + fixed

    def grid(self) -> dict[str, list[Any]]:
        """Every key's finite list of values, for Optuna's GridSampler; a continuous range is refused."""
        values = {}
        for key, distribution in self.distributions.items():
            if isinstance(distribution, CategoricalDistribution):
                values[key] = list(distribution.choices)
            elif getattr(distribution, "step", None) is not None and not getattr(distribution, "log", False):
                count = round((distribution.high - distribution.low) / distribution.step) + 1
                as_number = int if isinstance(distribution, IntDistribution) else _clean
                values[key] = [as_number(distribution.low + i * distribution.step) for i in range(count)]
            else:
                raise UserError(f"{PARAMS_KEY}.{key}", _describe(distribution),
                                "is a continuous range, and a grid needs a finite list of values.",
                                "With hydra/sweeper/sampler=grid give choice(a, b, c) or range(start, stop, step); "
                                "keep interval(...) for the random and tpe samplers.")
        return values

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values()) if self.distributions else 1


def parse(overrides: list[str]) -> SearchSpace:
    """The space declared by ``key=value`` overrides (``hydra.sweeper.params`` first, then the command
    line's, which win for the same key)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    space = SearchSpace()
    parser = OverridesParser.create()
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except OverrideParseException as error:
            key, _, value = text.partition("=")
            raise UserError(f"{PARAMS_KEY}.{key}", value, f"is not valid override syntax ({_one_line(error)}).",
                            "Write ranges as tag(log, interval(1e-5, 1e-1)), interval(a, b), choice(a, b) or "
                            "range(start, stop, step), quoted on the command line: \"key='interval(0.1, 1)'\".") from None
        key = override.get_key_element()
        space.distributions.pop(key, None)
        space.fixed.pop(key, None)
        if override.is_sweep_override():
            space.distributions[key] = _distribution(override, text)
        else:
            space.fixed[key] = None if override.is_delete() and override.value() is None else \
                override.get_value_element_as_str()
    return space


def _distribution(override, text: str) -> BaseDistribution:
    """The Optuna distribution of one sweep override; Optuna's own refusal becomes a UserError."""
    from hydra.core.override_parser.types import Transformer

    key, _, value_text = text.partition("=")
    value = override.value()
    try:
        if override.is_interval_sweep():
            return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)
        values = list(override.sweep_iterator(transformer=Transformer.encode))
        if override.is_range_sweep() and not value.shuffle:
            return _range_distribution(values, value.step)
        return CategoricalDistribution(values)
    except ValueError as error:
        raise UserError(f"{PARAMS_KEY}.{key.lstrip('+~')}", value_text, f"is not a valid search range ({error}).",
                        "A log-scale range tag(log, interval(a, b)) needs 0 < a < b, e.g. interval(1e-5, 1e-1); "
                        "a linear one needs a < b; a range(start, stop, step) needs at least one value.") from None


def _range_distribution(values: list[Any], step: Any) -> BaseDistribution:
    """Hydra's ``range(start, stop, step)`` as an ordered grid with its last value included."""
    if not values:
        raise ValueError("the range is empty")
    if all(isinstance(v, int) for v in values) and isinstance(step, int):
        return IntDistribution(values[0], values[-1], step=abs(step)) if step > 0 else CategoricalDistribution(values)
    if step > 0:
        return FloatDistribution(float(values[0]), _clean(values[0] + (len(values) - 1) * step), step=float(step))
    return CategoricalDistribution(values)


def format_value(value: Any) -> str:
    """A drawn value as override text Hydra parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if isinstance(value, str) and (not text or _NEEDS_QUOTES & set(text)):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def _clean(number: float) -> float:
    """``0.30000000000000004`` -> ``0.3``: grid values as a person wrote them."""
    return float(f"{number:.12g}")


def _describe(distribution: BaseDistribution) -> str:
    if isinstance(distribution, FloatDistribution):
        inner = f"interval({distribution.low!r}, {distribution.high!r})"
        return f"tag(log, {inner})" if distribution.log else inner
    return repr(distribution)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
