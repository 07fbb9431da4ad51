"""The algorithm registry: `--algo` names to MetaLearner constructors."""

import functools

from tf_meta.algorithms.base import MetaLearner
from tf_meta.algorithms.maml import MAML
from tf_meta.algorithms.mann import MANN
from tf_meta.algorithms.protonet import ProtoNet
from tf_meta.algorithms.relation import RelationNet
from tf_meta.algorithms.reptile import Reptile
from tf_meta.algorithms.snail import SNAIL

ALGORITHMS = {
    "protonet": ProtoNet,
    "maml": MAML,
    "fomaml": functools.partial(MAML, first_order=True),
    "reptile": Reptile,
    "relationnet": RelationNet,
    "mann": MANN,
    "snail": SNAIL,
}
DEFAULT_ALGORITHM = "protonet"  # what a run trains when it names none


def learner_class(algo):
    """The MetaLearner subclass behind `algo`, whose class attributes declare what it is.

    Raises:
      ValueError: unknown algo.
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algo {algo!r}; choose from {sorted(ALGORITHMS)}")
    constructor = ALGORITHMS[algo]
    return getattr(constructor, "func", constructor)  # see through functools.partial


def build_learner(algo, input_shape, ways=None, backbone=None, network=None, **kwargs):
    """A built MetaLearner for `algo` over inputs of `input_shape`.

    The backbone is the algorithm's `default_backbone(input_shape, ways, network)` (its
    paper's image network, or `backbones.NETWORKS[network]`, an MLP for vectors; with a
    `ways`-output head for MAML and Reptile) unless `backbone` is given; `kwargs` go to
    the algorithm's constructor (its hyperparameters, `regression`).

    Raises:
      ValueError: unknown algo, or a hyperparameter it does not take or out of bounds.
    """
    if backbone is None:
        backbone = learner_class(algo).default_backbone(tuple(input_shape), ways, network)
    learner = ALGORITHMS[algo](backbone, **kwargs)
    learner.build((None, *input_shape))
    return learner


__all__ = ["ALGORITHMS", "MAML", "MANN", "MetaLearner", "ProtoNet", "RelationNet", "Reptile",
           "SNAIL", "build_learner", "learner_class"]
