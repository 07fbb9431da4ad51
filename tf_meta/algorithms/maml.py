"""Model-Agnostic Meta-Learning, exact second order or first order (Finn et al., ICML 2017)."""

import keras
import tensorflow as tf

from tf_meta import backbones
from tf_meta.algorithms import fast_weights, task_batch
from tf_meta.algorithms.adaptive import FastWeightLearner
from tf_meta.algorithms.hyperparameters import POSITIVE, Hyperparameter, at_least
from tf_meta.episode import Episode


@keras.saving.register_keras_serializable(package="tf_meta")
class MAML(FastWeightLearner):
    """MAML: adapt θ to the support set by SGD, score the queries with the adapted weights.

    `adapt` runs `inner_steps` (training) or `test_inner_steps` (evaluation and serving)
    SGD steps of `inner_lr` on the support loss with fast weights
    (`fast_weights.sgd_adapt`); `score` is the query forward pass with those weights. The
    outer tape of `meta_gradients` differentiates through the inner loop: the exact
    second-order meta-gradient, BatchNorm included (`backbones.BatchNormalization`: a
    backbone's stock Keras BatchNormalization is replaced by it, or refused where it cannot
    be, `backbones.with_exact_batch_norm`), or the first-order one with `first_order=True`
    (FOMAML, `ALGORITHMS["fomaml"]`).

    Training and evaluation run the meta-batch's tasks as one batched computation
    (`task_batch`: tasks stacked on channels, grouped convolutions, per-task fast weights)
    where the backbone translates, the BatchNorm policy is transductive and the tasks are
    small enough for it to be faster (`batching_pays`: the papers' Omniglot tasks, not 15
    queries per class of the max-pool Conv-4), else one task after another (`batch_tasks`,
    `batching_refusal`); both give the same meta-gradient and logits. Serving adapts its
    one task as the loop does.

    BatchNorm policy: `transductive=True` (the paper's and its reference code's) uses batch
    statistics in the inner and outer loop, at training and at test, so a test query batch
    is normalised with its own statistics. `transductive=False` uses the moving statistics
    at test; they are then updated once per task from the query forward pass in training.

    References:
      Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
      Networks", ICML 2017.
    """

    # Defaults: Finn et al. 2017, 5-way 1-shot Omniglot as tf_meta runs it (protocols.py).
    HYPERPARAMETERS = (
        Hyperparameter("inner_lr", float, 0.4, "inner-loop SGD learning rate α", POSITIVE),
        Hyperparameter("inner_steps", int, 1, "inner-loop steps in training; 0 trains the "
                       "pretrained-on-all-tasks baseline", at_least(0)),
        Hyperparameter("test_inner_steps", int, 3, "inner-loop steps at test and in the "
                       "served model", at_least(0), shapes_weights=False),
        Hyperparameter("transductive", bool, True, "BatchNorm batch statistics at test too "
                       "(--notransductive: the moving statistics)"),
        Hyperparameter("adapt_batchnorm", bool, True, "adapt BatchNorm's offset and scale in "
                       "the inner loop too (--noadapt_batchnorm: only the other weights, as "
                       "cbfinn/maml, whose batch-norm variables are not among its fast "
                       "weights)"),
        Hyperparameter("sum_inner_loss", bool, False, "inner loss: the support examples' losses "
                       "summed and divided by the shots, ways x their mean (cbfinn/maml "
                       "utils.py xent, summed by tf.gradients), so inner_lr is the paper's α; "
                       "--nosum_inner_loss: their mean"),
        Hyperparameter("batch_tasks", bool, True, "run the meta-batch's tasks as one batched "
                       "computation (grouped convolutions), in training and at test, where it "
                       "applies and was measured faster (small conv tasks); --nobatch_tasks: "
                       "one task after another", shapes_weights=False),
        Hyperparameter("parallel_tasks", int, 1, "tasks whose meta-gradients run at once when "
                       "they run one after another (2 is ~20% faster on 2 cores, ~100 MB more "
                       "memory)", at_least(1), shapes_weights=False),
    )

    META_OPTIMIZER = dict(FastWeightLearner.META_OPTIMIZER, steps=1000, decay_rate=1.0)

    # Tasks are batched up to this many values written by the first convolution per task
    # (images x h x w x filters). Measured (benchmarks/task_batching.py, meta-batch 32, 2
    # cores): batched/looped MAML 1.62 (FOMAML 2.01) at 125k (strided Conv-4, 10 images of
    # 28x28: the papers' Omniglot), 1.00 at 500k (max-pool Conv-4, 10 images), 1.04 at 1M
    # (strided, 80 images), 0.81 (FOMAML 0.65) at 4M (max-pool, 80 images); an MLP without
    # convolutions (sinusoid) 0.97: it loops.
    BATCHED_FIRST_CONV_VALUES = 250_000
    UNBATCHED_WITHOUT_TRANSDUCTION = ("--notransductive updates the moving statistics task "
                                      "after task")

    def __init__(self, backbone, first_order=False, **kwargs):
        if not first_order:  # Keras's BatchNormalization would make the second order wrong
            backbone = backbones.with_exact_batch_norm(backbone)
        super().__init__(backbone, **kwargs)
        self.first_order = first_order

    def get_config(self):
        return {**super().get_config(), "first_order": self.first_order}

    def meta_gradients(self, episodes):
        """Mean meta-gradient over the meta-batch: its tasks batched or one after another."""
        if self.batches_tasks(episodes, training=True):
            return self.batched_meta_gradients(episodes)
        return self.looped_meta_gradients(episodes)

    def batching_images(self, episodes, training):
        """A task's support and query images (static shapes; None if unknown)."""
        del training  # the same tasks in training and at test
        support, query = episodes.support_x.shape[1], episodes.query_x.shape[1]
        return None if support is None or query is None else support + query

    def batched_meta_gradients(self, episodes):
        """Mean meta-gradient over the meta-batch as one computation (`task_batch`).

        The meta-batch's activations are alive at once (as `parallel_tasks` = its size);
        the graph holds one step of T tasks, whatever T.
        """
        with tf.GradientTape() as tape:
            loss, logits = self.batched_query_loss(episodes)
            scaled = self.scaled_loss(loss)
        return tape.gradient(scaled, self.trainable_variables), loss, logits

    def batched_query_loss(self, episodes):
        """(mean query loss, query logits [T, Q, ways]) of a meta-batch adapted in training,
        all tasks at once: what `looped_meta_gradients` computes task after task."""
        logits = self.batched_logits(episodes, training=True)
        return tf.reduce_mean(self.query_loss(episodes.query_y, logits)), logits

    def task_batched_adapt(self, episodes, training, as_served=False):
        del as_served  # MAML adapts every task alike
        return task_batch.sgd_adapt(
            self.backbone, self.support_loss(episodes.support_y), episodes.support_x,
            episodes.support_y, self.inner_steps if training else self.test_inner_steps,
            self.inner_lr, self.first_order,
            frozen=() if self.adapt_batchnorm else self._batchnorm_positions())

    def looped_meta_gradients(self, episodes):
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
                scaled = self.scaled_loss(loss)
            task_grads = tape.gradient(scaled, variables)
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

    def support_loss(self, support_y):
        loss = super().support_loss(support_y)
        if not self.sum_inner_loss or self.regression:
            return loss
        ways = self.episode_ways(support_y)

        def summed(y, outputs):  # Σ losses / shots = ways × mean, in the loss's dtype
            mean = loss(y, outputs)
            return tf.cast(ways, mean.dtype) * mean
        return summed

    def adapt(self, support_x, support_y, training):
        return fast_weights.sgd_adapt(
            self.backbone, self.support_loss(support_y), support_x, support_y,
            self.inner_steps if training else self.test_inner_steps, self.inner_lr,
            first_order=self.first_order, training=self._bn_training(training),
            frozen=() if self.adapt_batchnorm else self._batchnorm_positions())

    def score(self, fast, episode, training):
        outputs, moving = fast_weights.forward(self.backbone, fast, episode.query_x,
                                               self._bn_training(training))
        if training and not self.transductive:
            for variable, value in zip(self.backbone.non_trainable_variables, moving):
                variable.assign(value)
        return self.head(outputs, self.episode_ways(episode.support_y))

    def _bn_training(self, training):
        return training or self.transductive

    def _batchnorm_positions(self):
        """Positions of BatchNorm's offsets and scales in backbone.trainable_variables."""
        norms = {id(v) for layer in backbones.nested_layers(self.backbone)
                 if isinstance(layer, keras.layers.BatchNormalization)
                 for v in layer.trainable_variables}
        return frozenset(i for i, v in enumerate(self.backbone.trainable_variables)
                         if id(v) in norms)
