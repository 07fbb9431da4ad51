"""A Simple Neural Attentive Meta-Learner, SNAIL (Mishra, Rohaninejad, Chen & Abbeel, ICLR 2018)."""

import math

import keras
import tensorflow as tf

from tf_meta.algorithms.hyperparameters import POSITIVE, Hyperparameter, at_least
from tf_meta.algorithms.sequence import SequenceLearner, to_sequence
from tf_meta.episode import num_ways
from tf_meta.precision import full_precision


def tc_dilations(sequence_length):
    """Dilations of TCBlock(T): 2, 4, ..., 2^L with L = ceil(log2 T), at least one block.

    The paper's pseudocode, DenseBlock(2^i) for i = 1..L, as every reimplementation reads
    it. With kernel 2 the stack reaches 2 + 4 + ... + 2^L >= T − 1 positions back.
    """
    return [2 ** i for i in range(1, max(1, math.ceil(math.log2(sequence_length))) + 1)]


class DenseBlock(keras.layers.Layer):
    """DenseBlock(R, D): a gated causal convolution (kernel 2, dilation R, D filters) whose
    output is concatenated to its input: [N, T, C] -> [N, T, C + D].

    [xf, xg]_t = x_{t−R} W_0 + x_t W_1 + b, with x_{t−R} = 0 for t < R;
    out_t = tanh(xf_t) · σ(xg_t).
    """

    def __init__(self, dilation, filters, **kwargs):
        super().__init__(**kwargs)
        self.dilation, self.filters = dilation, filters

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(2, input_shape[-1], 2 * self.filters),
                                      initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(2 * self.filters,), initializer="zeros",
                                    name="bias")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.filters)

    def call(self, x):
        past = tf.pad(x, [[0, 0], [self.dilation, 0], [0, 0]])[:, :tf.shape(x)[1]]
        return self._gated(x, past)

    def split_call(self, support, queries):
        """The block on S positions and on one extra position S per query.

        Args:
          support: [B, S, C], positions 0..S-1; queries: [B, Q, C], each at position S.
        Returns:
          ([B, S, C + D], [B, Q, C + D]).
        """
        past_index = tf.shape(support)[1] - self.dilation
        past = tf.gather(support, tf.maximum(past_index, 0), axis=1)[:, None]  # [B, 1, C]
        past *= tf.cast(past_index >= 0, past.dtype)
        return self.call(support), self._gated(queries, past)

    def _gated(self, x, past):
        kernel, bias = (tf.cast(w, self.compute_dtype) for w in (self.kernel, self.bias))
        z = _linear(past, kernel[0]) + _linear(x, kernel[1]) + bias
        xf, xg = tf.split(z, 2, axis=-1)
        return tf.concat([x, tf.tanh(xf) * tf.sigmoid(xg)], axis=-1)


def _linear(x, kernel):
    """[N, T, C] @ [C, K] -> [N, T, K] as one 2-D matmul (einsum's gradient is far slower)."""
    shape = tf.shape(x)
    out = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), kernel)
    return tf.reshape(out, tf.concat([shape[:-1], [kernel.shape[-1]]], axis=0))


class TCBlock(keras.layers.Layer):
    """TCBlock(T, D): DenseBlocks with dilations `tc_dilations(T)`: [N, T, C] -> [N, T, C + L·D],
    L = ceil(log2 T)."""

    def __init__(self, sequence_length, filters, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [DenseBlock(d, filters, name=f"dense_{d}")
                       for d in tc_dilations(sequence_length)]

    def build(self, input_shape):
        for block in self.blocks:
            block.build(input_shape)
            input_shape = block.compute_output_shape(input_shape)

    def compute_output_shape(self, input_shape):
        for block in self.blocks:
            input_shape = block.compute_output_shape(input_shape)
        return input_shape

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return x

    def split_call(self, support, queries):
        for block in self.blocks:
            support, queries = block.split_call(support, queries)
        return support, queries


class AttentionBlock(keras.layers.Layer):
    """AttentionBlock(dk, dv): causal single-head soft attention, its read concatenated to the
    input: [N, T, C] -> [N, T, C + dv].

    Keys and queries are affine projections to dk, values to dv; position t reads
    softmax over s <= t of (q_t · k_s / √dk) times v_s. The key projection starts equal
    to the query projection (then both train freely): q_t · k_s = (W x_t) · (W x_s) is
    then a similarity, so attention at initialisation already leans towards the steps
    most like x_t, instead of weighting them by an indefinite random form.
    """

    def __init__(self, key_size, value_size, **kwargs):
        super().__init__(**kwargs)
        self.key_size, self.value_size = key_size, value_size
        self.query = keras.layers.Dense(key_size, name="query")
        self.key = keras.layers.Dense(key_size, name="key")
        self.value = keras.layers.Dense(value_size, name="value")

    def build(self, input_shape):
        for layer in (self.query, self.key, self.value):
            layer.build(input_shape)
        # Tied at the start, so that 20-way training leaves chance (docs/RESULTS.md,
        # SNAIL: why the label scale and tied keys).
        self.key.kernel.assign(self.query.kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.value_size)

    def call(self, x):
        return self._attend(x, self.key(x), self.value(x))

    def split_call(self, support, queries):
        """As DenseBlock.split_call: each query attends to the S support positions and itself."""
        key, value = self.key(support), self.value(support)  # [B, S, dk], [B, S, dv]
        query, own_key, own_value = self.query(queries), self.key(queries), self.value(queries)
        logits = tf.concat([tf.einsum("bqk,bsk->bqs", query, key),
                            tf.reduce_sum(query * own_key, axis=-1, keepdims=True)],
                           axis=-1) / math.sqrt(self.key_size)  # [B, Q, S + 1]
        weights = _softmax(logits)
        read = tf.einsum("bqs,bsv->bqv", weights[..., :-1], value) + weights[..., -1:] * own_value
        return self._attend(support, key, value), tf.concat([queries, read], axis=-1)

    def _attend(self, x, key, value):
        """Causal attention of x's positions over key/value [N, T, dk], [N, T, dv]."""
        logits = tf.einsum("ntk,nsk->nts", self.query(x), key) / math.sqrt(self.key_size)
        length = tf.shape(x)[1]
        causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)  # s <= t
        weights = _softmax(tf.where(causal, logits, -1e9))
        return tf.concat([x, tf.einsum("nts,nsv->ntv", weights, value)], axis=-1)


def _softmax(logits):
    """Softmax over the last axis, computed in float32 and returned in the logits' dtype."""
    return tf.cast(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), logits.dtype)


class SnailNet(keras.layers.Layer):
    """The paper's Omniglot sequence model over [embedding, label] steps:

    AttentionBlock(64, 32), TCBlock(T, 128), AttentionBlock(256, 128), TCBlock(T, 128),
    AttentionBlock(512, 256), then a 1x1 convolution (a Dense per position) to `outputs`.

    `call` runs whole sequences [N, T, C] -> [N, T, outputs], causally. `split_call` runs
    the same function for Q sequences that share their first S steps (the support set)
    and end with one query each, computing the shared steps once: ([B, S, C], [B, Q, C])
    -> [B, Q, outputs], equal to `call` on each [support; query] at its last position.
    Both compute in the layer's compute dtype and return float32.
    """

    def __init__(self, outputs, sequence_length, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [AttentionBlock(64, 32, name="attention1"),
                       TCBlock(sequence_length, 128, name="tc1"),
                       AttentionBlock(256, 128, name="attention2"),
                       TCBlock(sequence_length, 128, name="tc2"),
                       AttentionBlock(512, 256, name="attention3")]
        # Zero-initialised, so training starts from uniform predictions: with Glorot weights
        # on its ~1,250 input channels, Adam's first steps overshoot.
        self.head = keras.layers.Dense(outputs, kernel_initializer="zeros", name="head")

    def build(self, input_shape):
        for block in self.blocks:
            block.build(input_shape)
            input_shape = block.compute_output_shape(input_shape)
        self.head.build(input_shape)

    def call(self, x):
        x = tf.cast(x, self.compute_dtype)
        for block in self.blocks:
            x = block(x)
        return full_precision(self.head(x))

    def split_call(self, support, queries):
        support, queries = (tf.cast(t, self.compute_dtype) for t in (support, queries))
        for block in self.blocks:
            support, queries = block.split_call(support, queries)
        return full_precision(self.head(queries))


@keras.saving.register_keras_serializable(package="tf_meta")
class SNAIL(SequenceLearner):
    """SNAIL: temporal convolutions and causal attention over the labelled support set.

    Every item is embedded by the backbone (Conv-4 for images, as ProtoNet's; an MLP for
    vectors). Step t of a sequence is [embedding(x_t), s·onehot(y_t)] for the N·K support
    items, then [embedding(query), 0] (`to_sequence(delayed=False)`); `SnailNet` maps it
    to logits and only the query position is scored (cross-entropy, the default
    `query_loss`). Each query ends its own sequence of length N·K + 1, so it attends to the
    support set and itself, never to another query, and its label is never read;
    `SnailNet.split_call` computes the shared support steps once per episode. BatchNorm in
    the embedding uses the meta-batch's statistics in training and the moving ones at test.
    The support order is the one given (`make_episode_dataset` shuffles it, stateless seed).

    `sequence_length` T sets the depth of both TC blocks, ceil(log2 T) dense blocks each:
    the paper's N·K + 1 of the training task (default max_ways + 1; train.py passes
    train_ways × train_shots + 1). Longer sequences still run (TC reach 2 + ... + 2^L).

    Support labels are scaled by s = `label_scale` (default √D, D the embedding width) and
    attention keys start equal to the queries: with neither, 20-way training stays at chance
    (docs/RESULTS.md, SNAIL: why the label scale and tied keys). The blocks, the Omniglot
    stack and T are the paper's as its reimplementations read it; the rest is assumed
    (docs/RESULTS.md, SNAIL: what was taken from the paper and what was assumed).

    References:
      Mishra, Rohaninejad, Chen & Abbeel, "A Simple Neural Attentive Meta-Learner", ICLR 2018.
    """

    HYPERPARAMETERS = (
        Hyperparameter("sequence_length", int, None, "sequence length T its TC blocks cover, "
                       "ceil(log2 T) dense blocks each (default: max_ways + 1; the protocol's "
                       "is train_ways x train_shots + 1)", at_least(2)),
        Hyperparameter("label_scale", float, None, "the value of a support label's one-hot "
                       "entry (default: √D, D the embedding width; 1 before this existed)",
                       POSITIVE),
    )

    META_OPTIMIZER = dict(SequenceLearner.META_OPTIMIZER, meta_lr=1e-4, decay_rate=1.0)

    def __init__(self, backbone, **kwargs):
        super().__init__(backbone, **kwargs)
        if not hasattr(backbone, "ways"):
            raise ValueError("SNAIL classifies; its backbone must be a "
                             "sequence.LabelledEmbedding (see SNAIL.default_backbone)")
        self.sequence_length = self.sequence_length or backbone.ways + 1
        # √D: the norm of a D-dimensional embedding with unit-scale features.
        if self.label_scale is None:
            self.label_scale = float(math.sqrt(backbone.units))
        self.net = self.in_precision(SnailNet(backbone.ways, self.sequence_length, name="snail"))
        self.net.build((None, None, backbone.units + backbone.ways))

    def batch_logits(self, episodes, training):
        support, query = self.backbone.embed_episodes(episodes.support_x, episodes.query_x,
                                                      training)
        support_steps, query_steps = to_sequence(support, episodes.support_y, query,
                                                 self.max_ways, delayed=False,
                                                 label_scale=self.label_scale)
        logits = self.net.split_call(support_steps, query_steps)  # [B, Q, max_ways]
        return logits[..., :num_ways(episodes.support_y)]
