"""Hyperparameter declarations: what an algorithm takes, its default, its help, its bounds.

An algorithm lists its hyperparameters once, in its class (`MetaLearner.HYPERPARAMETERS`).
Everything else reads that list: the constructor fills and checks the values, the run
config accepts exactly those names for that algorithm, and `train.py` generates its flags
(type, help text and default) from it. A default is the value of the paper the algorithm
module cites; a dataset whose paper used another value says so in `tf_meta/protocols.py`.
"""

import numbers
from typing import Any, Callable, NamedTuple, Optional


class Bound(NamedTuple):
    """A condition on a value and the words that state it ("positive and finite")."""

    holds: Callable[[Any], bool]
    requirement: str


FLOAT32_MAX = 3.4028234663852886e38  # float32's largest finite value: weights and rates are float32
POSITIVE = Bound(lambda v: 0 < v <= FLOAT32_MAX, "positive and finite in float32 (<= 3.4e38)")


def at_least(minimum, reason=""):
    """Bound: value >= minimum, with an optional reason appended to the message."""
    return Bound(lambda v: v >= minimum, f">= {minimum}" + (f" ({reason})" if reason else ""))


def in_unit_interval():
    """Bound: 0 < value <= 1."""
    return Bound(lambda v: 0 < v <= 1, "in (0, 1]")


class Hyperparameter(NamedTuple):
    """One hyperparameter of an algorithm.

    Fields:
      name: the constructor keyword, the run-config key and the flag name.
      type: bool, int or float (the flag's type).
      default: the algorithm's default (its paper's value); None when the learner derives
        it from its shape (SNAIL's sequence length, its label scale).
      help: one line: what it is, for the flag's help.
      bound: a `Bound` every non-None value must meet, or None.
      shapes_weights: whether the value changes what training computes. False for
        settings used only at test and in the served model (test-time inner steps) or only
        in how training executes (tasks in parallel): these may differ between a run, its
        resume and its evaluation; the others may not (the run folder's contract,
        `tf_meta.experiment`).
    """

    name: str
    type: type
    default: Any
    help: str
    bound: Optional[Bound] = None
    shapes_weights: bool = True

    def check(self, value):
        """Returns `value` converted to `type`; ValueError if it breaks the bound."""
        if value is None:
            return None
        if self.type is not bool and isinstance(value, bool) or not isinstance(
                value, numbers.Real):
            raise ValueError(f"--{self.name} must be a {self.type.__name__}, got {value!r}")
        if self.type is int and value != int(value):
            raise ValueError(f"--{self.name} must be an integer, got {value!r}")
        value = self.type(value)
        if self.bound is not None and not self.bound.holds(value):
            raise ValueError(f"--{self.name} must be {self.bound.requirement}, got {value}")
        return value


def with_defaults(declarations, **defaults):
    """`declarations` with some defaults replaced (a subclass's paper used other values)."""
    names = {d.name for d in declarations}
    unknown = set(defaults) - names
    if unknown:
        raise ValueError(f"no hyperparameter {sorted(unknown)} among {sorted(names)}")
    return tuple(d._replace(default=defaults.get(d.name, d.default)) for d in declarations)


def resolve(declarations, values, owner):
    """Every declared hyperparameter's value: `values` where given, else the default.

    Args:
      declarations: tuple of Hyperparameter.
      values: dict name -> value (None: the default).
      owner: the algorithm's name, for messages.

    Returns:
      dict name -> checked value, in declaration order.

    Raises:
      ValueError: a name not declared, or a value out of its bound.
    """
    declared = {d.name: d for d in declarations}
    for name in values:
        if name not in declared:
            raise ValueError(f"--{name} does not apply to {owner} (its hyperparameters: "
                             f"{', '.join(declared) or 'none'})")
    return {name: d.check(d.default if values.get(name) is None else values[name])
            for name, d in declared.items()}
