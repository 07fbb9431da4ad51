"""Reptile: first-order meta-learning toward adapted weights (Nichol et al. 2018)."""

import keras
import tensorflow as tf

from tf_meta.algorithms import fast_weights, task_batch
from tf_meta.algorithms.adaptive import FastWeightLearner
from tf_meta.algorithms.hyperparameters import POSITIVE, Hyperparameter, at_least
from tf_meta.episode import Episode


@keras.saving.register_keras_serializable(package="tf_meta")
class Reptile(FastWeightLearner):
    """Reptile: per task, Adam steps on the support set give φ; then θ ← θ + ε(mean φ − θ).

    `meta_gradients` returns θ − mean(φ_task) as the "gradient", so the meta-optimizer
    SGD(learning_rate=ε) performs exactly the interpolation above, and a schedule anneals ε
    (`meta_optimizer`: linearly to 0, as the paper). The inner loop is Adam with β1 = 0 on
    random mini-batches of `inner_batch_size` support examples (supervised-reptile's), as a
    tf.while_loop with no gradient to θ (`fast_weights.adam_adapt`). Query examples of
    training episodes are only scored, for the loss/accuracy metrics.

    Inner Adam state: as the reference code (whose Adam slots are not part of the model
    state it resets between tasks), Adam's moments and step count carry over from task to
    task in training: the tasks of a meta-batch adapt one after another, each starting from
    the state the previous one left, saved in the learner's `inner_state` variables (and
    its checkpoints and exports). The paper's author: "Reptile benefits from the Adam
    second moment estimate" (openai/supervised-reptile#28); with a fresh Adam per task
    (sign-like first steps) a budget run here stalled near 77% (docs/RESULTS.md).
    At test and in the served model every task starts from the saved state and leaves it
    unchanged, as the reference, which saves all its variables, Adam's slots included,
    before each test task and restores them after it (supervised_reptile/reptile.py,
    `_full_state`).

    Under tf.distribute each replica carries the state through its own share of the
    meta-batch, all starting from the saved state, and the saved state becomes the mean of
    the replicas' (θ's update is the mean over all tasks, as always). So mirrored Reptile
    equals the average of single-device runs on the replicas' shares, not the one-device
    chain through the whole meta-batch (tests/test_distributed.py).

    At test the tasks are independent (each from the saved state), so a meta-batch of test
    tasks adapts as one batched computation where it pays (`batch_tasks`, `task_batch`:
    grouped convolutions, per-task weights and Adam moments; `task_batched_adapt`), with
    the loop's per-task mini-batches; training cannot, its tasks being a chain.

    BatchNorm always uses batch statistics, as in the reference code. `transductive=True`
    classifies all queries of an episode in one batch; `transductive=False` classifies each
    query in a batch made of the support set plus that query alone, so no query sees another.

    References:
      Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", arXiv 2018;
      openai/supervised-reptile.
    """

    SCALES_LOSS = False  # θ − mean φ is a difference of weights, not a loss gradient
    UNUSED_SETTINGS = {name: "Reptile anneals ε linearly to 0 over --steps (meta_optimizer)"
                       for name in ("lr_decay_every", "lr_decay_rate")}
    META_OPTIMIZER = dict(FastWeightLearner.META_OPTIMIZER, meta_lr=1.0)

    # Defaults: Nichol et al. 2018 / supervised-reptile run_omniglot (1-shot 5-way): Adam
    # (β1 = 0) 1e-3, 5 inner steps on batches of 10 in training, 50 on batches of 5 at test.
    HYPERPARAMETERS = (
        Hyperparameter("inner_lr", float, 1e-3, "inner-loop Adam learning rate", POSITIVE),
        Hyperparameter("inner_steps", int, 5, "inner-loop steps in training",
                       at_least(1, "with 0 inner steps θ never moves")),
        Hyperparameter("test_inner_steps", int, 50, "inner-loop steps at test and in the "
                       "served model", at_least(0), shapes_weights=False),
        Hyperparameter("inner_batch_size", int, 10, "support examples per inner step in "
                       "training", at_least(1)),
        Hyperparameter("test_inner_batch_size", int, 5, "support examples per inner step at "
                       "test", at_least(1), shapes_weights=False),
        Hyperparameter("transductive", bool, True, "all queries of an episode in one "
                       "BatchNorm batch (--notransductive: each query with the support set "
                       "alone)", shapes_weights=False),
        Hyperparameter("batch_tasks", bool, True, "at test, adapt the meta-batch's tasks as "
                       "one batched computation (grouped convolutions) where it applies and "
                       "was measured faster; training adapts task after task, each continuing "
                       "the previous task's inner Adam state; --nobatch_tasks: task after task "
                       "at test too", shapes_weights=False),
    )

    # At test, tasks are batched up to this many values written by the first convolution
    # per task and inner step (test_inner_batch_size images x h x w x filters). Measured
    # (benchmarks/task_batching.py --stage=test, 50 tasks, 2 cores): batched/looped 2.28 at
    # 63k (strided Conv-4, 5 images: the paper's test), 1.48 at 251k (max-pool Conv-4, 5
    # images), 1.24 at 502k (10 images), 1.07 at 1M (20 images, where it loops).
    BATCHED_FIRST_CONV_VALUES = 1_000_000
    UNBATCHED_WITHOUT_TRANSDUCTION = ("--notransductive scores each query in a BatchNorm batch "
                                      "of its own, task after task")

    def __init__(self, backbone, **kwargs):
        super().__init__(backbone, **kwargs)
        # Under tf.distribute each replica carries the state through its own share of the
        # meta-batch; "mean" keeps the average of the replicas' states.
        def zeros(name, shape=()):
            return self.add_weight(shape=shape, initializer="zeros", trainable=False, name=name,
                                   aggregation="mean")

        weights = self.backbone.trainable_variables
        self.inner_state = fast_weights.AdamState(
            [zeros(f"inner_adam_m{i}", w.shape) for i, w in enumerate(weights)],
            [zeros(f"inner_adam_v{i}", w.shape) for i, w in enumerate(weights)],
            zeros("inner_adam_step"))

    def adapt(self, support_x, support_y, training, seed=(0, 0)):
        """φ for one support set from the saved inner Adam state (θ at test is unchanged)."""
        return self._adapt(support_x, support_y, training, seed, self._saved_state())[0]

    def _adapt(self, support_x, support_y, training, seed, state):
        """(φ, inner AdamState after adapting) for one support set, starting from `state`."""
        return fast_weights.adam_adapt(
            self.backbone, self.support_loss(support_y), support_x, support_y,
            self.inner_steps if training else self.test_inner_steps, self.inner_lr,
            self.inner_batch_size if training else self.test_inner_batch_size,
            tf.cast(seed, tf.int32), state=state)

    def _saved_state(self):
        return tf.nest.map_structure(tf.convert_to_tensor, self.inner_state)

    def score(self, fast, episode, training):
        """Query logits [Q, ways] with weights `fast`, BatchNorm on batch statistics."""
        del training  # batch statistics either way
        if not self.transductive:  # the support set plus this query alone
            return self.score_each_with_support(fast, episode)
        outputs, _ = fast_weights.forward(self.backbone, fast, episode.query_x, True)
        return self.head(outputs, self.episode_ways(episode.support_y))

    def looped_logits(self, episodes, training):
        return self._map_tasks(episodes, training)[0]

    def batching_images(self, episodes, training):
        """Images of a test inner step (static shapes); None in training, which runs its
        tasks one after another (each continues the inner Adam state the previous left)."""
        support = episodes.support_x.shape[1]
        if training or support is None:
            return None
        return min(self.test_inner_batch_size, support)

    def task_batched_adapt(self, episodes, training, as_served=False):
        """Every task's φ at test, each from the saved inner Adam state and seeded as
        `_map_tasks` seeds it (meta-step 0, task index): the loop's mini-batches; with
        `as_served`, as `adapt` seeds a served request's one task (0, 0)."""
        del training  # test only (batching_images)
        tasks = tf.shape(episodes.support_y)[0]
        index = tf.zeros([tasks], tf.int32) if as_served else tf.range(tasks)
        seeds = tf.stack([tf.zeros([tasks], tf.int32), index], axis=1)
        return task_batch.adam_adapt(
            self.backbone, self.support_loss(episodes.support_y), episodes.support_x,
            episodes.support_y, self.test_inner_steps, self.inner_lr,
            self.test_inner_batch_size, seeds, self._saved_state())

    def meta_gradients(self, episodes):
        """(θ − mean φ over the meta-batch, mean query loss, query logits [B, Q, ways])."""
        logits, fasts, state = self._map_tasks(episodes, training=True)
        for variable, value in zip(tf.nest.flatten(self.inner_state), tf.nest.flatten(state)):
            variable.assign(value)
        theta = self.trainable_variables
        grads = [v - tf.reduce_mean(phi, axis=0) for v, phi in zip(theta, fasts)]
        loss = tf.reduce_mean(self.query_loss(episodes.query_y, logits), axis=0)
        return grads, loss, logits

    def _map_tasks(self, episodes, training):
        """(query logits [B, Q, ways], φ stacked over tasks, inner AdamState at the end).

        Training: tasks one after another, each continuing the previous task's inner Adam
        state. Test: every task starts from the saved state (order-independent).
        """
        # Inner mini-batches are seeded by (meta-step, task index): reproducible runs.
        step = self.optimizer.iterations if training and self.optimizer is not None else 0
        step = tf.cast(step, tf.int32)
        saved = self._saved_state()

        def task(i, state, logits, fasts):
            episode = Episode(*(t[i] for t in episodes))
            fast, after = self._adapt(episode.support_x, episode.support_y, training,
                                      tf.stack([step, i]), state)
            return (i + 1, after if training else state,
                    logits.write(i, self.score(fast, episode, training)),
                    [ta.write(i, w) for ta, w in zip(fasts, fast)])

        _, state, logits, fasts = tf.while_loop(
            lambda i, *_: i < tf.shape(episodes.support_y)[0], task,
            (tf.constant(0), saved,
             tf.TensorArray(tf.float32, size=0, dynamic_size=True,
                            element_shape=tf.TensorShape([None, None])),
             [tf.TensorArray(v.dtype, size=0, dynamic_size=True, element_shape=v.shape)
              for v in self.trainable_variables]),
            parallel_iterations=1 if training else 10)
        return logits.stack(), [ta.stack() for ta in fasts], state

    def meta_optimizer(self, meta_lr, steps, decay_every, decay_rate):
        """SGD(ε) with ε annealed linearly from `meta_lr` to 0 over `steps` (the paper's)."""
        del decay_every, decay_rate  # Reptile anneals linearly instead
        return keras.optimizers.SGD(keras.optimizers.schedules.PolynomialDecay(
            meta_lr, steps, end_learning_rate=0.0, power=1.0))
