"""FastWeightLearner: the base of learners that adapt a classifier to each support set."""

import tensorflow as tf

from tf_meta import backbones
from tf_meta.algorithms.base import MetaLearner
from tf_meta.episode import num_ways


class FastWeightLearner(MetaLearner):
    """A classifier (or regressor) whose weights θ are adapted to each episode's support set.

    `query_logits` is `score(adapt(support), episode)`: `adapt` returns fast weights (a list
    of tensors parallel to `backbone.trainable_variables`, run through `stateless_call`,
    `fast_weights`), `score` the query logits with them. The siblings differ in how they
    adapt (MAML: SGD, differentiated through; Reptile: Adam, not) and in the meta-update.

    The head has `ways` outputs, fixed at build time (`max_ways`). An episode (or serving
    request) with fewer classes uses the first ones; more is an error, raised in the graph.
    """

    TASKS = ("classification", "regression")
    ADAPTS = True
    HAS_HEAD = True

    @staticmethod
    def default_backbone(input_shape, ways, network=None):
        if not ways:
            raise ValueError("MAML and Reptile need `ways`, the size of their output head")
        return backbones.classifier_for(input_shape, ways, network)

    @property
    def max_ways(self):
        """The size of the output head (None for regression)."""
        return None if self.regression else self.backbone.output_shape[-1]

    def adapt(self, support_x, support_y, training):
        """Fast weights for one support set: list parallel to backbone.trainable_variables."""
        raise NotImplementedError

    def score(self, fast, episode, training):
        """Query logits [Q, ways] of the adapted weights `fast` (from `adapt`)."""
        raise NotImplementedError

    def query_logits(self, episode, training):
        fast = self.adapt(episode.support_x, episode.support_y, training)
        return self.score(fast, episode, training)

    def support_loss(self, support_y):
        """The inner loop's loss (y, backbone outputs) -> scalar, over the episode's ways."""
        ways = self.episode_ways(support_y)
        return lambda y, outputs: self.query_loss(y, self.head(outputs, ways))

    def episode_ways(self, support_y):
        """The episode's ways (scalar int32; None for regression), checked against the head."""
        if self.regression:
            return None
        ways, outputs = num_ways(support_y), self.max_ways
        with tf.control_dependencies([tf.debugging.assert_less_equal(
                ways, outputs, message=f"more classes than the {outputs} outputs of the head")]):
            return tf.identity(ways)

    @staticmethod
    def head(outputs, ways):
        """The first `ways` outputs: [Q, outputs] -> [Q, ways] (all of them for regression)."""
        return outputs if ways is None else outputs[:, :ways]
