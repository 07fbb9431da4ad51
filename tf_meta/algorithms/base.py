"""MetaLearner: the contract every tf_meta algorithm implements and declares itself through."""

import keras
import tensorflow as tf

from tf_meta import backbones, distribute
from tf_meta.algorithms import hyperparameters
from tf_meta.algorithms.keras_model import KerasModel
from tf_meta.episode import Episode, as_episode
from tf_meta.precision import policy_of, precision_of, set_policy

LOGITS_SPEC = tf.TensorSpec([None, None], tf.float32)
TASKS = ("classification", "regression")


class MetaLearner(KerasModel):
    """Episodic learner: an episode in, query logits out; `fit()`/`evaluate()` just work.

    A subclass implements `query_logits(episode, training)` for ONE unbatched Episode, and
    declares what it is in class attributes, which code outside the algorithms reads
    instead of asking which algorithm it holds:

      HYPERPARAMETERS  its hyperparameters (`hyperparameters.Hyperparameter`: default,
                       help, bound); the constructor takes them as keywords, each set
                       as an attribute of the same name.
      TASKS            the task kinds it can learn: "classification" (integer labels,
                       logits [Q, N]) and/or "regression" (float targets [Q, 1], MSE).
      ADAPTS           True when it adapts weights to the support set at test time; it
                       then has `adapt(support_x, support_y, training)` -> fast weights
                       and `score(fast, episode, training)` -> query logits, and can be
                       exported adapted (`export.export_adapted`).
      HAS_HEAD         True when an output head fixes the most classes an episode may
                       have (`max_ways`, its width, set when the learner is built).
      EXTRA_METRICS    names of `evaluation.EXTRA_METRICS` the run reports besides
                       accuracy ± CI (MANN: the paper's instance accuracy).
      UNUSED_SETTINGS  run settings its `meta_optimizer` ignores -> why (Reptile: the
                       staircase decay); a run refuses a value for them other than the
                       protocol's, and the protocol table says they are unused.
      META_OPTIMIZER   the `meta_optimizer` arguments `compile()` uses when given no
                       optimizer: the "tf_meta" protocol's (tf_meta/protocols.py, checked
                       equal by tests/test_keras_conventions.py).
      NESTED_MODELS    constructor arguments that are Keras models, serialised nested in
                       `get_config` (the backbone; RelationNet's relation module too).
      SCALES_LOSS      True when its meta-update follows the gradient of a loss, which
                       float16 training scales (`scaled_loss`); Reptile's θ − φ is not one.

    How outputs become answers: `outputs(logits)` gives what evaluation scores and the
    served model returns (logits, probabilities, classes; regression: predictions), and
    `probabilities(logits)` is softmax unless the logits are not logits (RelationNet).

    Defaults built on `query_logits`, for a subclass to override where it differs:
      query_loss        cross-entropy of query logits (MSE for regression)
      batch_logits      query_logits over the meta-batch with tf.map_fn
      meta_gradients    gradient of the mean query loss w.r.t. trainable_variables
      finish_gradients  None; a function of the meta-batch's mean gradients (clipping)
      meta_optimizer    the outer optimizer: Adam with a staircase decay
    and fixed: train_step, test_step, predict_step (query logits [B, Q, ways]),
    episode_scores.

    Keras conventions (`keras_model.KerasModel`): `learner(episode)` answers an episode's
    queries, `compile()` takes the algorithm's own meta-optimizer and refuses a loss or
    metrics, `save("m.keras")` / `keras.models.load_model` round-trip the learner with its
    compiled optimizer, and Keras's `export()` is refused for `tf_meta.export`.

    The serving signature (`tf_meta.export`) calls `query_logits` with `training=False`
    on an Episode without query labels, so the hook must not read query_y.

    Precision (`tf_meta.precision`): the learner's Keras dtype policy, given as
    `precision`, is set on its networks (`in_precision`: the backbone here, a subclass's own
    networks where it builds them); the learner casts their outputs to float32
    (`precision.full_precision`), so `query_logits` and everything after it are float32.

    Args:
      backbone: keras.Model, the network `call` runs (an embedding, a classifier, ...).
      regression: learn the "regression" task kind instead of "classification".
      precision: "float32", "bfloat16" or "float16" (`precision.PRECISIONS`; the low ones
        are Keras's mixed policies, float32 variables); None: the global Keras dtype
        policy's.
      name: the Keras model name.
      **hyperparameters: values for HYPERPARAMETERS (unset ones take their default).
    """

    HYPERPARAMETERS = ()
    TASKS = ("classification",)
    ADAPTS = False
    HAS_HEAD = False
    EXTRA_METRICS = ()
    UNUSED_SETTINGS = {}
    META_OPTIMIZER = dict(meta_lr=1e-3, steps=10000, decay_every=2000, decay_rate=0.5)
    NESTED_MODELS = ("backbone",)
    SCALES_LOSS = True
    finish_gradients = None

    def __init__(self, backbone, regression=False, precision=None, name=None,
                 **hyperparameter_values):
        values = hyperparameters.resolve(self.HYPERPARAMETERS, hyperparameter_values,
                                         type(self).__name__)
        # The policy is the networks'; with autocast off the learner itself neither casts
        # the episodes it is called on nor reads its variables (θ, the fast weights' start)
        # in low precision.
        super().__init__(name=name, dtype=policy_of(precision), autocast=False)
        self.task = "regression" if regression else "classification"
        if self.task not in self.TASKS:
            raise ValueError(f"{type(self).__name__} learns {' and '.join(self.TASKS)}, "
                             f"not {self.task}")
        self.backbone = self.in_precision(backbone)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = (None if regression else
                                 keras.metrics.SparseCategoricalAccuracy(name="accuracy"))
        for name, value in values.items():
            setattr(self, name, value)

    @classmethod
    def hyperparameter_names(cls):
        return tuple(h.name for h in cls.HYPERPARAMETERS)

    def hyperparameter_values(self):
        """dict name -> this learner's value, in declaration order."""
        return {name: getattr(self, name) for name in self.hyperparameter_names()}

    @property
    def regression(self):
        return self.task == "regression"

    @property
    def precision(self):
        """"float32", "bfloat16" or "float16": the precision its networks compute in."""
        return precision_of(self.dtype_policy.name)

    def in_precision(self, network):
        """`network` with every layer in this learner's dtype policy (`precision.set_policy`)."""
        return set_policy(network, self.dtype_policy.name)

    def scaled_loss(self, loss):
        """The loss a meta-gradient tape differentiates: scaled by the optimizer's dynamic
        loss scale under float16 (compiled with a LossScaleOptimizer, whose `apply` divides
        the scale out), the loss itself otherwise. Call it inside the tape."""
        optimizer = getattr(self, "optimizer", None)
        return loss if optimizer is None else optimizer.scale_loss(loss)

    @staticmethod
    def default_backbone(input_shape, ways, network=None):
        """The backbone `build_learner` gives this algorithm: an embedding by default, the
        image network `network` (`backbones.NETWORKS`) or the algorithm's own choice."""
        return backbones.embedding_for(input_shape, network)

    @property
    def max_ways(self):
        """The most classes an episode may have: the head's width, None without a head."""
        return None

    def query_logits(self, episode, training):
        """Query logits [Q, ways] float32 for one unbatched Episode."""
        raise NotImplementedError

    def independent_query_logits(self, episode):
        """Test-time query logits [Q, ways] whose row q depends on the support set and query q
        alone: what an export serves by default, so one client's odd query never changes the
        answer to another (`export.export_learner`).

        This is `query_logits` for learners whose test already scores each query on its own;
        learners whose transductive test normalises the queries as one BatchNorm batch (the
        papers' tests of MAML, Reptile, Relation Networks) override it.
        """
        return self.query_logits(episode, training=False)

    def answers_queries_together(self):
        """Whether the test answers a query differently beside other queries (a transductive
        BatchNorm batch): then `independent_query_logits` is another answer, and the run
        reports its accuracy too (the default export serves it)."""
        return False

    def probabilities(self, logits):
        """Class probabilities [..., Q, N] from query logits: their softmax."""
        return tf.nn.softmax(logits, axis=-1)

    def outputs(self, logits):
        """The answer evaluation scores and the served model returns, from query logits.

        Classification: logits, probabilities [.., Q, N] float32 and classes [.., Q] int32
        (the most probable class). Regression: predictions [.., Q, 1].
        """
        if self.regression:
            return {"predictions": logits}
        return {"logits": logits, "probabilities": self.probabilities(logits),
                "classes": tf.argmax(logits, axis=-1, output_type=tf.int32)}

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
            scaled = self.scaled_loss(loss)
        return tape.gradient(scaled, self.trainable_variables), loss, logits

    def meta_optimizer(self, meta_lr, steps, decay_every, decay_rate):
        """The outer optimizer a run compiles with: Adam, rate × decay_rate every decay_every."""
        del steps  # a fixed staircase, whatever the run length
        return keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(
            meta_lr, decay_every, decay_rate, staircase=True))

    # Keras's private hook, replaced so that fit() under a strategy draws no episode.
    _maybe_symbolic_build = distribute.build_optimizer_only

    def train_step(self, episodes):
        episodes = as_episode(episodes)  # datasets of tuples or dicts of the fields too
        grads, loss, logits = self.meta_gradients(episodes)
        grads = distribute.replica_gradients(grads, self._finish_scaled())
        self.optimizer.apply(grads, self.trainable_variables)
        return self._track(loss, episodes.query_y, logits)

    def test_step(self, episodes):
        episodes = as_episode(episodes)
        logits = self.batch_logits(episodes, training=False)
        loss = tf.reduce_mean(self.query_loss(episodes.query_y, logits), axis=0)
        return self._track(loss, episodes.query_y, logits)

    def predict_step(self, episodes):
        return self.answer(as_episode(episodes), training=False)

    def independent_batch_logits(self, episodes):
        """`independent_query_logits` of every episode of a meta-batch: [B, Q, ways]."""
        return tf.map_fn(lambda e: self.independent_query_logits(Episode(*e)),
                         tuple(episodes), fn_output_signature=LOGITS_SPEC)

    def episode_scores(self, episodes, each_on_its_own=False):
        """Per-episode query accuracy (MSE for regression) [B] float32 with training=False:
        of the test's answers, or of the served default's (`independent_query_logits`)."""
        if each_on_its_own:
            logits = self.independent_batch_logits(episodes)
        else:
            logits = self.batch_logits(episodes, training=False)
        if self.regression:
            return self.query_loss(episodes.query_y, logits)
        hits = tf.equal(self.outputs(logits)["classes"], tf.cast(episodes.query_y, tf.int32))
        return tf.reduce_mean(tf.cast(hits, tf.float32), axis=-1)

    def _finish_scaled(self):
        """`finish_gradients` for gradients of `scaled_loss`: it sees them unscaled (a clip
        norm is the loss's), and its result is scaled back for the LossScaleOptimizer."""
        finish = self.finish_gradients
        scale = getattr(self.optimizer, "dynamic_scale", None)
        if finish is None or scale is None:
            return finish
        return lambda grads: [g * scale for g in finish([g / scale for g in grads])]

    @property
    def metrics(self):
        return [m for m in (self.loss_tracker, self.accuracy_tracker) if m is not None]

    def _track(self, loss, query_y, logits):
        self.loss_tracker.update_state(loss)
        if self.accuracy_tracker is not None:
            self.accuracy_tracker.update_state(query_y, logits)
        return distribute.reportable({m.name: m.result() for m in self.metrics})


class BatchedLearner(MetaLearner):
    """A learner vectorised over the meta-batch: it implements `batch_logits` itself, and
    `query_logits` of one episode is the batch of one (ProtoNet, RelationNet, MANN, SNAIL)."""

    def batch_logits(self, episodes, training):
        raise NotImplementedError

    def query_logits(self, episode, training):
        batched = Episode(*(tf.expand_dims(t, 0) for t in episode))
        return self.batch_logits(batched, training)[0]
