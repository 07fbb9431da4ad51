"""MetaLearner: the one contract every tf_meta algorithm implements."""

import keras
import tensorflow as tf

from tf_meta import backbones
from tf_meta.episode import Episode

LOGITS_SPEC = tf.TensorSpec([None, None], tf.float32)


class MetaLearner(keras.Model):
    """Episodic learner: an episode in, query logits out; `fit()`/`evaluate()` just work.

    A subclass implements one hook, `query_logits(episode, training)` for ONE unbatched
    Episode. Everything else has a default built on it:

      query_loss      cross-entropy of query logits (override for another loss)
      batch_logits    query_logits over the meta-batch with tf.map_fn (override to
                      vectorise, as metric learners can)
      meta_gradients  gradient of the mean query loss w.r.t. trainable_variables
      finish_gradients  identity (RelationNet clips the meta-batch's gradients)
      train_step      meta_gradients -> finish_gradients -> optimizer.apply -> trackers
      test_step       batch_logits(training=False), no update
      predict_step    query logits [B, Q, ways]
      meta_optimizer  the outer optimizer: Adam with a staircase decay

    How the algorithms plug in, with no change to this class:
      ProtoNet     query_logits = -squared distance to class means (batch_logits vectorised).
      RelationNet  query_logits = relation scores; query_loss = MSE against one-hot.
      MAML/FOMAML  query_logits adapts fast weights on the support set with an inner
                   GradientTape loop and `backbone.stateless_call`, then scores the
                   queries; the outer tape differentiates through it (second order
                   unless `first_order`, a constructor argument). meta_gradients is
                   overridden only to take one task's gradient at a time (memory).
      Reptile      overrides meta_gradients to return θ − mean(φ_task), so the optimizer
                   step SGD(ε) is θ ← θ + ε(φ − θ); query_logits adapts as MAML does.
      MANN/SNAIL   query_logits runs the sequence model over the support items with their
                   labels followed by the queries, and reads the query positions.

    The serving signature (`tf_meta.export`) calls `query_logits` with `training=False`
    on an Episode without query labels, so the hook must not read query_y.

    Regression (`regression=True`, e.g. sinusoids): labels are float targets [.., 1], the
    "logits" are predictions, the loss is the mean squared error and no accuracy is kept.

    Args:
      backbone: keras.Model, the network `call` runs (an embedding, a classifier, ...).
      regression: float targets and MSE instead of class labels and cross-entropy.
    """

    def __init__(self, backbone, regression=False, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.regression = regression
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = (None if regression else
                                 keras.metrics.SparseCategoricalAccuracy(name="accuracy"))

    @staticmethod
    def default_backbone(input_shape, ways):
        """The backbone `build_learner` gives this algorithm: an embedding by default."""
        return backbones.embedding_for(input_shape)

    @property
    def max_ways(self):
        """The most classes an episode may have; None when any number works (metric learners)."""
        return None

    def call(self, x, training=False):
        """Backbone forward: [batch, *input_shape] -> backbone output."""
        return self.backbone(x, training=training)

    def query_logits(self, episode, training):
        """Query logits [Q, ways] float32 for one unbatched Episode."""
        raise NotImplementedError

    def query_loss(self, query_y, logits):
        """Mean loss over queries: [..., Q] labels ([..., Q, 1] targets), [..., Q, N] -> [...]."""
        if self.regression:
            return tf.reduce_mean(tf.square(logits - tf.cast(query_y, logits.dtype)), axis=[-2, -1])
        losses = keras.losses.sparse_categorical_crossentropy(query_y, logits, from_logits=True)
        return tf.reduce_mean(losses, axis=-1)

    def batch_logits(self, episodes, training):
        """Query logits [B, Q, ways] for a meta-batch of Episodes."""
        return tf.map_fn(lambda episode: self.query_logits(Episode(*episode), training),
                         tuple(episodes), fn_output_signature=LOGITS_SPEC)

    def meta_gradients(self, episodes):
        """Returns (gradients parallel to trainable_variables, mean loss, logits [B, Q, N])."""
        with tf.GradientTape() as tape:
            logits = self.batch_logits(episodes, training=True)
            loss = tf.reduce_mean(self.query_loss(episodes.query_y, logits), axis=0)
        return tape.gradient(loss, self.trainable_variables), loss, logits

    def meta_optimizer(self, meta_lr, steps, decay_every, decay_rate):
        """The outer optimizer train.py compiles with: Adam, rate × decay_rate every decay_every."""
        del steps  # a fixed staircase, whatever the run length
        return keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(
            meta_lr, decay_every, decay_rate, staircase=True))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a tf.distribute strategy Keras's fit() would draw the first meta-batch from
        # the training iterator (training would then start at the second one, and a resumed
        # run would not see the episodes an uninterrupted one sees) and all-reduce its
        # uint8 pixels (which MultiWorkerMirroredStrategy's collectives reject), only to
        # build compiled metrics and the optimizer. A MetaLearner is built when constructed
        # and keeps its own metrics: only the optimizer needs building, in the scope.
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def finish_gradients(self, grads):
        """The whole meta-batch's mean gradients before the update (RelationNet clips here)."""
        return grads

    def train_step(self, episodes):
        grads, loss, logits = self.meta_gradients(episodes)
        # Under tf.distribute each replica holds a slice of the meta-batch, and the optimizer
        # sums the replicas' gradients: each is scaled so the sum is the meta-batch's mean. A
        # finish_gradients that is not linear (clipping) needs that mean first.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        finishes = type(self).finish_gradients is not MetaLearner.finish_gradients
        if replicas > 1 and finishes:
            grads = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.MEAN, grads)
        grads = self.finish_gradients(grads)
        if replicas > 1:
            grads = [g / replicas for g in grads]
        self.optimizer.apply(grads, self.trainable_variables)
        return self._track(loss, episodes.query_y, logits)

    def test_step(self, episodes):
        logits = self.batch_logits(episodes, training=False)
        loss = tf.reduce_mean(self.query_loss(episodes.query_y, logits), axis=0)
        return self._track(loss, episodes.query_y, logits)

    def predict_step(self, episodes):
        return self.batch_logits(episodes, training=False)

    def episode_scores(self, episodes):
        """Per-episode query accuracy (MSE for regression) [B] float32 with training=False."""
        logits = self.batch_logits(episodes, training=False)
        if self.regression:
            return self.query_loss(episodes.query_y, logits)
        hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                        tf.cast(episodes.query_y, tf.int32))
        return tf.reduce_mean(tf.cast(hits, tf.float32), axis=-1)

    @property
    def metrics(self):
        return [m for m in (self.loss_tracker, self.accuracy_tracker) if m is not None]

    def _track(self, loss, query_y, logits):
        self.loss_tracker.update_state(loss)
        if self.accuracy_tracker is not None:
            self.accuracy_tracker.update_state(query_y, logits)
        results = {m.name: m.result() for m in self.metrics}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 reduces each output across workers with reduce(MEAN, axis=0), which
            # fails on scalars (tensorflow/tensorflow#72388): give it [1], it returns [].
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results


class BatchedLearner(MetaLearner):
    """A learner vectorised over the meta-batch: it implements `batch_logits` itself, and
    `query_logits` of one episode is the batch of one (ProtoNet, RelationNet)."""

    def batch_logits(self, episodes, training):
        raise NotImplementedError

    def query_logits(self, episode, training):
        batched = Episode(*(tf.expand_dims(t, 0) for t in episode))
        return self.batch_logits(batched, training)[0]


class SequenceLearner(BatchedLearner):
    """A black-box learner reading [embedding(x), one-hot label] steps (MANN, SNAIL).

    Its backbone is a `backbones.LabelledEmbedding`, which fixes the label width and the
    size of the output head (`max_ways`) when the learner is built.
    """

    @staticmethod
    def item_embedding(input_shape):
        """The embedding `default_backbone` labels: Conv-4 for images, an MLP for vectors."""
        return backbones.embedding_for(input_shape)

    @classmethod
    def default_backbone(cls, input_shape, ways):
        if not ways:
            raise ValueError("MANN and SNAIL need `ways`, the width of their labels and head")
        return backbones.LabelledEmbedding(cls.item_embedding(input_shape), ways)

    @property
    def max_ways(self):
        """The width of the one-hot labels and of the output head."""
        return self.backbone.ways
