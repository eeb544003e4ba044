"""Range checks of numeric options, run when ``ns-train`` finalises a gm-nerf config (before any data is read).

Each config class checks its own fields in a ``validate(prefix)`` method next to it; :meth:`GMNeRFTrainerConfig.validate
<gmnerf_ns.training.trainer.GMNeRFTrainerConfig.validate>` calls them all. A value outside its range is an
:class:`OptionError` that names the option as it is spelled on the command line and the allowed range, e.g.
``--pipeline.model.num-samples 0: must be an integer >= 1``; ``ns-train`` prints it as one ``gmnerf error:`` line.
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional

from gmnerf_ns.core.errors import RunInputError


class OptionError(RunInputError):
    """One or more option values outside their allowed ranges; the message names each option and its range."""


def flag(prefix: str, name: str) -> str:
    """The command-line spelling of field ``name`` under ``prefix``: ``flag("--pipeline.model", "num_samples")`` is
    ``--pipeline.model.num-samples``; a prefix of ``--`` gives ``--name`` (options after a subcommand, such as the
    dataparser's ``--resolution``)."""
    name = name.replace("_", "-")
    return f"--{name}" if prefix == "--" else f"{prefix}.{name}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class OptionCheck:
    """Collects the out-of-range fields of one config; :meth:`done` raises one :class:`OptionError` naming them all.

    Example::

        check = OptionCheck(self, "--pipeline.model")
        check.integer("num_samples", low=1)
        check.number("grad_ray_fraction", low=0.0, high=1.0, low_open=True)
        check.done()
    """

    def __init__(self, config: Any, prefix: str):
        self.config = config
        self.prefix = prefix
        self.problems: List[str] = []

    def fail(self, name: str, value: Any, rule: str) -> None:
        """Records ``name`` (a field, or a dotted path below it) with ``value`` as breaking ``rule``."""
        shown = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
        self.problems.append(f"{flag(self.prefix, name)} {shown}: {rule}")

    def integer(self, name: str, low: Optional[int] = None, high: Optional[int] = None,
                value: Any = None, optional: bool = False) -> None:
        """An integer in [low, high] (either bound may be open-ended). ``optional``: None is allowed too."""
        value = getattr(self.config, name) if value is None else value
        if value is None and optional:
            return
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok and (low is None or value >= low) and (high is None or value <= high)
        if not ok:
            self.fail(name, value, _integer_rule(low, high))

    def number(self, name: str, low: Optional[float] = None, high: Optional[float] = None, low_open: bool = False,
               high_open: bool = False, value: Any = None, optional: bool = False) -> None:
        """A finite number in the range (``low_open``/``high_open``: the bound itself is excluded)."""
        value = getattr(self.config, name) if value is None else value
        if value is None and optional:
            return
        ok = _is_number(value) and math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            self.fail(name, value, _number_rule(low, high, low_open, high_open))

    def require(self, ok: bool, name: str, rule: str, value: Any = None) -> None:
        """Any other rule: records ``name`` unless ``ok``."""
        if not ok:
            self.fail(name, getattr(self.config, name) if value is None else value, rule)

    def done(self) -> None:
        """Raises :class:`OptionError` listing every problem found, if any."""
        if self.problems:
            raise OptionError("; ".join(self.problems))


def validate_all(*validators: Callable[[], None]) -> None:
    """Runs every validator (``check.done``, a sub-config's ``validate``...) and raises one :class:`OptionError` with
    all their problems, so that one run of ns-train reports every bad option at once."""
    problems = []
    for validate in validators:
        try:
            validate()
        except OptionError as err:
            problems.append(str(err))
    if problems:
        raise OptionError("; ".join(problems))


def _integer_rule(low: Optional[int], high: Optional[int]) -> str:
    if low is not None and high is not None:
        return f"must be an integer from {low} to {high}"
    if low is not None:
        return f"must be an integer >= {low}"
    return f"must be an integer <= {high}" if high is not None else "must be an integer"


def _number_rule(low: Optional[float], high: Optional[float], low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"must be a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"must be a number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"must be a number {'<' if high_open else '<='} {high:g}"
    return "must be a finite number"


def group_norm_channels(channels: int) -> bool:
    """Whether ``GroupNorm(min(8, channels), channels)`` (the encoder's and volume's norm) accepts ``channels``."""
    return channels < 8 or channels % 8 == 0
