"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018)."""

import keras
import tensorflow as tf
from keras import ops

from tf_meta import backbones
from tf_meta.algorithms.base import LOGITS_SPEC, BatchedLearner
from tf_meta.algorithms.hyperparameters import POSITIVE, Hyperparameter
from tf_meta.episode import Episode, num_ways
from tf_meta.precision import full_precision


def class_features(support_features, support_y, ways):
    """Per-class feature maps: the SUM of each class's support feature maps (the paper's, K > 1).

    Args:
      support_features: [B, S, *F] float32 (F = [h, w, c] maps or [d] vectors).
      support_y: [B, S] int, labels in [0, ways).
      ways: scalar int.
    Returns:
      [B, ways, *F] float32.
    """
    batch, shots = tf.shape(support_features)[0], tf.shape(support_features)[1]
    flat = tf.reshape(support_features, [batch, shots, -1])  # [B, S, prod F]
    onehot = tf.one_hot(support_y, ways, dtype=flat.dtype)  # [B, S, N]
    sums = tf.einsum("bsn,bsd->bnd", onehot, flat)
    return tf.reshape(sums, [batch, ways, *support_features.shape[2:]])


@keras.saving.register_keras_serializable(package="tf_meta")
class RelationModule(keras.Model):
    """Relation Networks' g over every (class, query) pair: relation scores in [0, 1].

    The paper's g on one pair: the channel concatenation [class map, query map] [h, w, 2c]
    -> 2 conv blocks (conv3x3, BN, ReLU, max-pool) -> FC(hidden) ReLU -> FC(1) sigmoid.
    For feature vectors [d] (non-image embeddings) the concatenation [2d] goes straight to
    the FC layers.

    The first layer is linear, so on a concatenation it equals the sum of its two halves:
    conv([a, b]) = conv_a(a) + conv_b(b), with conv_a/conv_b the kernel's class/query input
    channels. Computing each class's half once and each query's half once, then adding
    them per pair, gives the same function with the same weights (one [3, 3, 2c, filters]
    kernel) for N + Q instead of N * Q first-layer convolutions.

    Call: (class_features [B, N, *F], query_features [B, Q, *F]) -> scores [B, Q, N].
    """

    def __init__(self, feature_shape, filters=64, hidden=8, name="relation_module", **kwargs):
        super().__init__(name=name, **kwargs)
        *spatial, channels = feature_shape
        self.feature_shape = tuple(feature_shape)
        self.filters, self.hidden = filters, hidden
        if spatial:
            self.pair_layer = keras.layers.Conv2D(filters, 3, padding="same", name="conv0")
            self.body = backbones.Block(
                [keras.Input((*spatial, filters)), backbones.BatchNormalization(momentum=0.9),
                 keras.layers.ReLU(), keras.layers.MaxPooling2D(2),
                 backbones.conv_block(filters, name="block1"),
                 keras.layers.Flatten(), keras.layers.Dense(hidden, activation="relu"),
                 keras.layers.Dense(1, activation="sigmoid")], name="body")
        else:
            self.pair_layer = keras.layers.Dense(hidden, name="dense0")
            self.body = backbones.Block(
                [keras.Input((hidden,)), keras.layers.ReLU(),
                 keras.layers.Dense(1, activation="sigmoid")], name="body")
        self.pair_layer.build((None, *spatial, 2 * channels))
        self.built = True  # every sublayer is built with its shape above

    def get_config(self):
        return {"name": self.name, "feature_shape": self.feature_shape, "filters": self.filters,
                "hidden": self.hidden}

    def call(self, class_features, query_features, training=False):
        batch, ways, queries = (ops.shape(class_features)[0], ops.shape(class_features)[1],
                                ops.shape(query_features)[1])
        # Split, a variable is not autocast: the pair layer's weights and the features are
        # cast to the compute dtype here (`stateless_call` reaches `call` without __call__'s
        # input casting too).
        kernel, bias = (ops.cast(w, self.compute_dtype)
                        for w in (self.pair_layer.kernel, self.pair_layer.bias))
        class_features, query_features = (ops.cast(f, self.compute_dtype)
                                          for f in (class_features, query_features))
        # Split, not sliced: the gradient is one concatenation, not two zero-padded
        # slice gradients and their sum.
        class_part, query_part = ops.split(kernel, 2, axis=-2)
        halves = []
        for features, part in ((class_features, class_part), (query_features, query_part)):
            flat = ops.reshape(features, (-1, *self.feature_shape))
            if len(self.feature_shape) == 3:
                out = ops.conv(flat, part, padding="same")
            else:
                out = ops.matmul(flat, part)
            halves.append(ops.reshape(out, (batch, -1, *out.shape[1:])))
        class_half, query_half = halves  # [B, N, *G], [B, Q, *G]
        pairs = class_half[:, None] + query_half[:, :, None] + bias  # [B, Q, N, *G]
        scores = self.body(ops.reshape(pairs, (-1, *pairs.shape[3:])), training=training)
        return ops.reshape(scores, (batch, queries, ways))


@keras.saving.register_keras_serializable(package="tf_meta")
class RelationNet(BatchedLearner):
    """Relation Networks: a learned comparison g(f(class), f(query)) in [0, 1] per class.

    f (`backbone`, `backbones.relation_embedding` on images) embeds support and query
    images into feature maps; each class's map is the sum of its support maps; the relation
    module g (`RelationModule`) scores each [class map, query map] channel
    concatenation. The "logits" are these relation scores [Q, N]; the loss is the mean
    squared error against the one-hot query labels, as the paper. The reference code clips
    each module's gradient to global norm 0.5 (`clip_norm`); so does `finish_gradients`.

    BatchNorm policy: the reference code never switches its networks to eval mode, so test
    episodes are normalised with their own batch statistics: `transductive=True`, the
    default (served requests too; moving statistics are then left untouched), each test
    episode alone, whatever the evaluation meta-batch.
    `transductive=False` uses the moving statistics at test. As in the reference, support
    and query images are embedded in separate forward passes (separate batch statistics).

    References:
      Sung et al., "Learning to Compare: Relation Network for Few-Shot Learning", CVPR 2018;
      floodsung/LearningToCompare_FSL (omniglot_train_one_shot.py).
    """

    # Defaults: floodsung/LearningToCompare_FSL (omniglot_train_one_shot.py).
    HYPERPARAMETERS = (
        Hyperparameter("transductive", bool, True, "BatchNorm batch statistics of each test "
                       "episode (--notransductive: the moving statistics)", shapes_weights=False),
        Hyperparameter("clip_norm", float, 0.5, "global norm each module's meta-gradient is "
                       "clipped to", POSITIVE),
        Hyperparameter("reference_init", bool, False, "initialise as the reference code "
                       "(weights_init: convolutions N(0, sqrt(2 / (9 out channels))), dense "
                       "layers N(0, 0.01) with bias 1) instead of Keras's Glorot and zeros"),
    )

    META_OPTIMIZER = dict(BatchedLearner.META_OPTIMIZER, decay_every=100000)
    NESTED_MODELS = ("backbone", "relation")

    def __init__(self, backbone, relation=None, **kwargs):
        super().__init__(backbone, **kwargs)
        self.relation = self.in_precision(relation or RelationModule(backbone.output_shape[1:]))
        if self.reference_init:
            for model in (self.backbone, self.relation):
                reference_initialisation(model)

    @staticmethod
    def default_backbone(input_shape, ways, network=None):
        """The paper's embedding of images into maps, unless a `network` is named."""
        del ways  # any number of classes
        if len(input_shape) == 3 and network is None:
            return backbones.relation_embedding(input_shape)
        return backbones.embedding_for(input_shape, network)

    def batch_logits(self, episodes, training):
        """Relation scores [B, Q, N] in [0, 1].

        At a transductive test each episode is scored alone, so its batch statistics are
        its own whatever the evaluation meta-batch (the reference tests one episode at a
        time; flattening 50 episodes into one batch moved scores by up to 0.58).
        """
        if training or not self.transductive:
            return self._scores(episodes, training)
        return tf.map_fn(lambda e: self._scores(Episode(*(t[None] for t in e)), training)[0],
                         tuple(episodes), fn_output_signature=LOGITS_SPEC)

    def independent_query_logits(self, episode):
        """Relation scores [Q, N] with the moving statistics (the `--notransductive` test):
        at a transductive test the queries are one BatchNorm batch, so one odd query would
        move every other score."""
        episodes = Episode(*(None if t is None else t[None] for t in episode))
        return self._scores(episodes, training=False, transductive=False)[0]

    def answers_queries_together(self):
        return self.transductive

    def _scores(self, episodes, training, transductive=None):
        """Relation scores [B, Q, N], every network run once over the meta-batch."""
        transductive = self.transductive if transductive is None else transductive

        def features(model, inputs):
            return self._features(model, inputs, training, transductive)

        support = features(self.backbone, _flat(episodes.support_x))  # [B*S, *F]
        query = features(self.backbone, _flat(episodes.query_x))
        batch = tf.shape(episodes.support_x)[0]
        support = tf.reshape(support, [batch, -1, *support.shape[1:]])
        query = tf.reshape(query, [batch, -1, *query.shape[1:]])
        classes = class_features(support, episodes.support_y, num_ways(episodes.support_y))
        return features(self.relation, (classes, query))

    def probabilities(self, logits):
        """Relation scores normalised per query: [..., Q, N] in [0, 1], each row summing to 1.

        The scores are already in [0, 1] (a sigmoid per class, not logits): a softmax over
        them would be nearly flat (at most e times between two classes). Divided by their
        sum they keep their ratios; a row of all-zero scores becomes uniform.
        """
        scores = logits + 1e-12  # a row of exact zeros (underflowed sigmoids) stays defined
        return scores / tf.reduce_sum(scores, axis=-1, keepdims=True)

    def query_loss(self, query_y, logits):
        """Mean squared error between relation scores [..., Q, N] and one-hot labels [..., Q]."""
        targets = tf.one_hot(query_y, tf.shape(logits)[-1], dtype=logits.dtype)
        return tf.reduce_mean(tf.square(logits - targets), axis=[-2, -1])

    def finish_gradients(self, grads):
        """Each module's meta-batch gradient clipped to global norm `clip_norm`."""
        grads = list(grads)
        in_relation = {id(v) for v in self.relation.trainable_variables}
        groups = [[i for i, v in enumerate(self.trainable_variables) if (id(v) in in_relation) == r]
                  for r in (False, True)]  # [embedding indices, relation-module indices]
        for group in groups:
            clipped, _ = tf.clip_by_global_norm([grads[i] for i in group], self.clip_norm)
            for i, g in zip(group, clipped):
                grads[i] = g
        return grads

    def _features(self, model, inputs, training, transductive):
        """model(*inputs) float32, BatchNorm per the policy above; moving statistics kept at
        test."""
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        if training or not transductive:
            return full_precision(model(*inputs, training=training))
        outputs, _ = model.stateless_call(model.trainable_variables,
                                          model.non_trainable_variables, *inputs, training=True)
        return full_precision(outputs)


def reference_initialisation(model):
    """Re-draws `model`'s convolution and dense weights as LearningToCompare_FSL's
    weights_init does (omniglot_train_one_shot.py): a convolution's kernel from N(0, 2 / n),
    n = kernel height x width x output channels, its bias 0; a dense layer's kernel from
    N(0, 0.01²), its bias 1. BatchNorm keeps scale 1 and offset 0, as there."""
    conv = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
    dense = keras.initializers.RandomNormal(stddev=0.01)
    for layer in backbones.nested_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            layer.kernel.assign(conv(layer.kernel.shape))
            layer.bias.assign(tf.zeros_like(layer.bias))
        elif isinstance(layer, keras.layers.Dense):
            layer.kernel.assign(dense(layer.kernel.shape))
            layer.bias.assign(tf.ones_like(layer.bias))


def _flat(x):
    """[B, n, *shape] -> [B * n, *shape] (static trailing shape)."""
    return tf.reshape(x, [-1, *x.shape[2:]])
