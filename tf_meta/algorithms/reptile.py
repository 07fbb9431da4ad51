"""Reptile: first-order meta-learning toward adapted weights (Nichol et al. 2018)."""

import keras
import tensorflow as tf

from tf_meta.algorithms import fast_weights
from tf_meta.algorithms.maml import MAML
from tf_meta.episode import Episode


class Reptile(MAML):
    """Reptile: per task, Adam steps on the support set give φ; then θ ← θ + ε(mean φ − θ).

    `meta_gradients` returns θ − mean(φ_task) as the "gradient", so the meta-optimizer
    SGD(learning_rate=ε) performs exactly the interpolation above, and a schedule anneals ε
    (`meta_optimizer`: linearly to 0, as the paper). The inner loop is Adam with β1 = 0 on
    random mini-batches of `inner_batch_size` support examples (supervised-reptile's), as a
    tf.while_loop with no gradient to θ (`fast_weights.adam_adapt`). Query examples of
    training episodes are only scored, for the loss/accuracy metrics.

    BatchNorm always uses batch statistics, as in the reference code. `transductive=True`
    classifies all queries of an episode in one batch; `transductive=False` classifies each
    query in a batch made of the support set plus that query alone, so no query sees another.

    References:
      Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", arXiv 2018;
      openai/supervised-reptile.
    """

    def __init__(self, backbone, inner_lr=1e-3, inner_steps=5, test_inner_steps=50,
                 inner_batch_size=10, test_inner_batch_size=5, transductive=True, **kwargs):
        super().__init__(backbone, inner_lr=inner_lr, inner_steps=inner_steps,
                         test_inner_steps=test_inner_steps, first_order=True,
                         transductive=transductive, **kwargs)
        if inner_steps < 1 or inner_batch_size < 1 or test_inner_batch_size < 1:
            raise ValueError("Reptile needs inner_steps, inner_batch_size and "
                             "test_inner_batch_size >= 1 (with 0 inner steps θ never moves)")
        self.inner_batch_size = inner_batch_size
        self.test_inner_batch_size = test_inner_batch_size

    def adapt(self, support_x, support_y, training, seed=(0, 0)):
        """φ for one support set (Adam on mini-batches): list parallel to trainable_variables."""
        ways = self._ways(support_y)
        return fast_weights.adam_adapt(
            self.backbone, lambda y, out: self.query_loss(y, self._head(out, ways)),
            support_x, support_y, self.inner_steps if training else self.test_inner_steps,
            self.inner_lr, self.inner_batch_size if training else self.test_inner_batch_size,
            tf.cast(seed, tf.int32))

    def query_logits(self, episode, training):
        return self._adapt_and_score(episode, training, seed=(0, 0))[0]

    def _adapt_and_score(self, episode, training, seed):
        """(query logits [Q, ways], φ) for one episode."""
        fast = self.adapt(episode.support_x, episode.support_y, training, seed)
        return self.score(fast, episode, training), fast

    def score(self, fast, episode, training):
        """Query logits [Q, ways] with weights `fast`, BatchNorm on batch statistics."""
        del training  # batch statistics either way
        ways = self._ways(episode.support_y)
        if self.transductive:
            outputs, _ = fast_weights.forward(self.backbone, fast, episode.query_x, True)
            return self._head(outputs, ways)

        def one_query(query):  # the support set plus this query alone
            batch = tf.concat([episode.support_x, query[None]], axis=0)
            outputs, _ = fast_weights.forward(self.backbone, fast, batch, True)
            return outputs[-1]

        outputs = tf.map_fn(one_query, episode.query_x,
                            fn_output_signature=tf.TensorSpec(self.backbone.output_shape[1:]))
        return self._head(outputs, ways)

    def batch_logits(self, episodes, training):
        return self._map_tasks(episodes, training)[0]

    def meta_gradients(self, episodes):
        """(θ − mean φ over the meta-batch, mean query loss, query logits [B, Q, ways])."""
        logits, fasts = self._map_tasks(episodes, training=True)
        theta = self.trainable_variables
        grads = [v - tf.reduce_mean(phi, axis=0) for v, phi in zip(theta, fasts)]
        loss = tf.reduce_mean(self.query_loss(episodes.query_y, logits), axis=0)
        return grads, loss, logits

    def _map_tasks(self, episodes, training):
        """Per task: (query logits, φ), stacked over the meta-batch."""
        # Inner mini-batches are seeded by (meta-step, task index): reproducible runs.
        step = self.optimizer.iterations if training and self.optimizer is not None else 0
        step = tf.cast(step, tf.int32)
        index = tf.range(tf.shape(episodes.support_y)[0])

        def task(args):
            episode, i = args
            return self._adapt_and_score(Episode(*episode), training, tf.stack([step, i]))

        specs = [tf.TensorSpec(v.shape, v.dtype) for v in self.trainable_variables]
        return tf.map_fn(task, (tuple(episodes), index),
                         fn_output_signature=(tf.TensorSpec([None, None], tf.float32), specs))

    def meta_optimizer(self, meta_lr, steps, decay_every, decay_rate):
        """SGD(ε) with ε annealed linearly from `meta_lr` to 0 over `steps` (the paper's)."""
        del decay_every, decay_rate  # Reptile anneals linearly instead
        return keras.optimizers.SGD(keras.optimizers.schedules.PolynomialDecay(
            meta_lr, steps, end_learning_rate=0.0, power=1.0))
