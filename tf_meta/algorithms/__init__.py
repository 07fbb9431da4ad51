"""The algorithm registry: `--algo` names to MetaLearner constructors."""

from tf_meta import backbones
from tf_meta.algorithms.base import MetaLearner
from tf_meta.algorithms.protonet import ProtoNet

ALGORITHMS = {
    "protonet": ProtoNet,
}


def build_learner(algo, input_shape, **kwargs):
    """A built MetaLearner for `algo` over inputs of `input_shape`.

    The backbone is `backbones.embedding_for(input_shape)` (Conv-4 for images, an MLP for
    vectors); `kwargs` go to the algorithm's constructor.

    Raises:
      ValueError: unknown algo.
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algo {algo!r}; choose from {sorted(ALGORITHMS)}")
    learner = ALGORITHMS[algo](backbones.embedding_for(tuple(input_shape)), **kwargs)
    learner.build((None, *input_shape))
    return learner


__all__ = ["ALGORITHMS", "MetaLearner", "ProtoNet", "build_learner"]
