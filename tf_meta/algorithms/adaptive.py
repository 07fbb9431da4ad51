"""FastWeightLearner: the base of learners that adapt a classifier to each support set."""

import keras
import tensorflow as tf

from tf_meta import backbones
from tf_meta.algorithms import fast_weights, task_batch
from tf_meta.algorithms.base import MetaLearner
from tf_meta.episode import Episode, num_ways


class FastWeightLearner(MetaLearner):
    """A classifier (or regressor) whose weights θ are adapted to each episode's support set.

    `query_logits` is `score(adapt(support), episode)`: `adapt` returns fast weights (a list
    of tensors parallel to `backbone.trainable_variables`, run through `stateless_call`,
    `fast_weights`), `score` the query logits with them. The siblings differ in how they
    adapt (MAML: SGD, differentiated through; Reptile: Adam, not) and in the meta-update.

    The head has `ways` outputs, fixed at build time (`max_ways`). An episode (or serving
    request) with fewer classes uses the first ones; more is an error, raised in the graph.

    A meta-batch's tasks may also adapt all at once (`task_batch`: tasks stacked on
    channels, grouped convolutions, per-task fast weights; `batched_logits`) where the
    backbone translates, the BatchNorm policy is transductive and the tasks are small
    enough for it to be faster (`batches_tasks`; hyperparameter `batch_tasks` of the
    subclasses that declare it); both ways compute the same logits. Serving adapts its one
    task as `query_logits` does.
    """

    TASKS = ("classification", "regression")
    ADAPTS = True
    HAS_HEAD = True

    # Tasks are batched up to this many values written by the first convolution per task
    # and pass (images of a pass x h x w x filters, `batching_images`); subclasses state
    # their measurement.
    BATCHED_FIRST_CONV_VALUES = 0
    # Why a --notransductive learner adapts task after task (`batching_refusal`).
    UNBATCHED_WITHOUT_TRANSDUCTION = "--notransductive: BatchNorm runs task after task"

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

    def batch_logits(self, episodes, training):
        """Query logits [B, Q, ways]: the tasks batched (`batches_tasks`) or one by one."""
        if self.batches_tasks(episodes, training):
            return self.batched_logits(episodes, training)
        return self.looped_logits(episodes, training)

    def looped_logits(self, episodes, training):
        """Query logits [B, Q, ways], one task after another."""
        return super().batch_logits(episodes, training)

    def batched_logits(self, episodes, training, as_served=False):
        """Query logits [T, Q, ways] of the meta-batch adapted at once (`task_batched_adapt`),
        each task's queries one BatchNorm batch."""
        fast = self.task_batched_adapt(episodes, training, as_served)
        outputs = task_batch.forward(self.backbone, fast, episodes.query_x)
        return self.head(outputs, self.episode_ways(episodes.support_y))

    def task_batched_adapt(self, episodes, training, as_served=False):
        """Every task's fast weights, list of [T, *variable shape] (`task_batch`), each
        task adapted as in the loop of `batch_logits`, or with `as_served` as
        `independent_query_logits` adapts its one task."""
        raise NotImplementedError

    def independent_batch_logits(self, episodes):
        """`independent_query_logits` of a meta-batch [T, Q, ways], the tasks adapted at
        once where `batch_logits` batches them; each task's queries are then scored as
        `independent_score` scores them, task after task (scoring every query of every
        task in one batch would hold T x Q x (S + 1) images' activations)."""
        if not self.batches_tasks(episodes, training=False):
            return super().independent_batch_logits(episodes)
        fast = self.task_batched_adapt(episodes, training=False, as_served=True)
        return tf.map_fn(lambda task: self.independent_score(task[1], Episode(*task[0])),
                         (tuple(episodes), fast),
                         fn_output_signature=tf.TensorSpec([None, None], fast[0].dtype))

    def batches_tasks(self, episodes, training):
        """Whether these episodes' tasks adapt as one batched computation: the learner's
        `batch_tasks` is on, nothing refuses it and it was measured faster for their size."""
        return (getattr(self, "batch_tasks", False) and self.batching_refusal() is None
                and self.batching_pays(episodes, training))

    def batching_refusal(self):
        """None when the tasks can be batched (`task_batch`); else why not, one line."""
        if not self.transductive:
            return self.UNBATCHED_WITHOUT_TRANSDUCTION
        return task_batch.unsupported(self.backbone)

    def batching_pays(self, episodes, training=True):
        """Whether batching these episodes' tasks was measured faster than the loop: the
        first convolution writes at most BATCHED_FIRST_CONV_VALUES per task and pass
        (static shapes; False where `batching_images` gives no count)."""
        images = self.batching_images(episodes, training)
        values = task_batch.first_convolution_values(self.backbone)
        return bool(values and images) and images * values <= self.BATCHED_FIRST_CONV_VALUES

    def batching_images(self, episodes, training):
        """Images per task in one pass of the adaptation (None: unknown or not batched)."""
        raise NotImplementedError

    def independent_query_logits(self, episode):
        fast = self.adapt(episode.support_x, episode.support_y, training=False)
        return self.independent_score(fast, episode)

    def independent_score(self, fast, episode):
        """`score` at test with no query seeing another: under a transductive test (the
        queries one BatchNorm batch) each query is scored in a batch with the support set
        alone, supervised-reptile's non-transductive test; otherwise `score` itself."""
        if not self.answers_queries_together():
            return self.score(fast, episode, training=False)
        return self.score_each_with_support(fast, episode)

    def answers_queries_together(self):
        return self.transductive and self._has_batchnorm()

    def score_each_with_support(self, fast, episode):
        """Query logits [Q, ways], each query's BatchNorm statistics from the support set and
        that query alone (one forward pass of S + 1 images per query)."""
        def one_query(query):
            batch = tf.concat([episode.support_x, query[None]], axis=0)
            outputs, _ = fast_weights.forward(self.backbone, fast, batch, True)
            return outputs[-1]

        # Outputs come in the fast weights' dtype: float32 (under mixed precision too) or
        # float64 in checks.
        outputs = tf.map_fn(one_query, episode.query_x, fn_output_signature=tf.TensorSpec(
            self.backbone.output_shape[1:], fast[0].dtype))
        return self.head(outputs, self.episode_ways(episode.support_y))

    def _has_batchnorm(self):
        return any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in backbones.nested_layers(self.backbone))

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
        """The first `ways` outputs: [..., Q, outputs] -> [..., Q, ways] (all of them for
        regression)."""
        return outputs if ways is None else outputs[..., :ways]
