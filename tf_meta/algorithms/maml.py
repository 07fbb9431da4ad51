"""Model-Agnostic Meta-Learning, exact second order or first order (Finn et al., ICML 2017)."""

import tensorflow as tf

from tf_meta import backbones
from tf_meta.algorithms import fast_weights
from tf_meta.algorithms.base import MetaLearner
from tf_meta.episode import Episode, num_ways


class MAML(MetaLearner):
    """MAML: adapt θ to the support set by SGD, score the queries with the adapted weights.

    `query_logits` runs `inner_steps` (training) or `test_inner_steps` (evaluation and
    serving) SGD steps of `inner_lr` on the support loss with fast weights
    (`fast_weights.sgd_adapt`), then the query forward pass with those weights. The outer
    tape of `MetaLearner.meta_gradients` differentiates through the inner loop: the exact
    second-order meta-gradient, BatchNorm included (`backbones.BatchNormalization`), or the
    first-order one with `first_order=True` (FOMAML, `ALGORITHMS["fomaml"]`).

    BatchNorm policy: `transductive=True` (the paper's and its reference code's) uses batch
    statistics in the inner and outer loop, at training and at test, so a test query batch
    is normalised with its own statistics. `transductive=False` uses the moving statistics
    at test; they are then updated once per task from the query forward pass in training.

    The head has `ways` outputs, fixed at build time. An episode (or serving request) with
    fewer classes uses the first ones; more is an error.

    References:
      Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
      Networks", ICML 2017.
    """

    def __init__(self, backbone, inner_lr=0.4, inner_steps=1, test_inner_steps=3,
                 first_order=False, transductive=True, parallel_tasks=1, **kwargs):
        super().__init__(backbone, **kwargs)
        if inner_lr <= 0 or inner_steps < 0 or test_inner_steps < 0:
            raise ValueError(f"need inner_lr > 0 and inner steps >= 0, got inner_lr={inner_lr}, "
                             f"inner_steps={inner_steps}, test_inner_steps={test_inner_steps}")
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.test_inner_steps = test_inner_steps
        self.first_order = first_order
        self.transductive = transductive
        self.parallel_tasks = parallel_tasks

    @staticmethod
    def default_backbone(input_shape, ways):
        if not ways:
            raise ValueError("MAML and Reptile need `ways`, the size of their output head")
        return backbones.classifier_for(input_shape, ways)

    def meta_gradients(self, episodes):
        """Mean meta-gradient over the meta-batch, one task at a time.

        Each task's outer gradient is taken inside a tf.while_loop and summed, so only
        `parallel_tasks` (default 1) tasks' inner-loop activations are alive at once: memory
        does not grow with the meta-batch, and the graph holds one task, not an unrolled
        meta-batch. More parallel tasks let the runtime overlap small kernels of several
        tasks, at that many times the activation memory.
        """
        variables = self.trainable_variables
        batch = tf.shape(episodes.support_y)[0]

        def task(i, grads, losses, logits):
            episode = Episode(*(t[i] for t in episodes))
            with tf.GradientTape() as tape:
                task_logits = self.query_logits(episode, training=True)
                loss = self.query_loss(episode.query_y, task_logits)
            task_grads = tape.gradient(loss, variables)
            return (i + 1, [g + t for g, t in zip(grads, task_grads)], losses.write(i, loss),
                    logits.write(i, task_logits))

        _, grads, losses, logits = tf.while_loop(
            lambda i, *_: i < batch, task,
            (tf.constant(0), [tf.zeros_like(v) for v in variables],
             tf.TensorArray(tf.float32, size=batch),
             tf.TensorArray(tf.float32, size=batch, element_shape=tf.TensorShape([None, None]))),
            parallel_iterations=self.parallel_tasks)
        scale = 1.0 / tf.cast(batch, tf.float32)
        return [g * scale for g in grads], tf.reduce_mean(losses.stack(), axis=0), logits.stack()

    def adapt(self, support_x, support_y, training):
        """Fast weights for one support set: list parallel to backbone.trainable_variables."""
        ways = self._ways(support_y)
        return fast_weights.sgd_adapt(
            self.backbone, lambda y, out: self.query_loss(y, self._head(out, ways)),
            support_x, support_y, self.inner_steps if training else self.test_inner_steps,
            self.inner_lr, first_order=self.first_order, training=self._bn_training(training))

    def query_logits(self, episode, training):
        fast = self.adapt(episode.support_x, episode.support_y, training)
        return self.score(fast, episode, training)

    def score(self, fast, episode, training):
        """Query logits [Q, ways] of the adapted weights `fast` (from `adapt`)."""
        outputs, moving = fast_weights.forward(self.backbone, fast, episode.query_x,
                                               self._bn_training(training))
        if training and not self.transductive:
            for variable, value in zip(self.backbone.non_trainable_variables, moving):
                variable.assign(value)
        return self._head(outputs, self._ways(episode.support_y))

    def _bn_training(self, training):
        return training or self.transductive

    @property
    def max_ways(self):
        """The size of the output head."""
        return None if self.regression else self.backbone.output_shape[-1]

    def _ways(self, support_y):
        if self.regression:
            return None
        ways, outputs = num_ways(support_y), self.max_ways
        with tf.control_dependencies([tf.debugging.assert_less_equal(
                ways, outputs, message=f"more classes than the {outputs} outputs of the head")]):
            return tf.identity(ways)

    @staticmethod
    def _head(outputs, ways):
        """The first `ways` outputs: [Q, outputs] -> [Q, ways] (all of them for regression)."""
        return outputs if ways is None else outputs[:, :ways]
