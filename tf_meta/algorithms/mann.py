"""Memory-Augmented Neural Networks with LRU access (Santoro et al., ICML 2016)."""

import keras
import tensorflow as tf

from tf_meta import backbones
from tf_meta.algorithms.hyperparameters import (POSITIVE, Hyperparameter, at_least,
                                                 in_unit_interval)
from tf_meta.algorithms.sequence import SequenceLearner, to_sequence
from tf_meta.episode import num_ways


# The memory algebra, as pure functions of one step over a meta-batch of B memories with
# N slots of width M, addressed by H heads (each head reads and writes with one key).

def cosine_read_weights(keys, memory, strength=1.0):
    """Read weights: softmax over slots of β times the cosine similarity of key and slot.

    β is NTM's key strength (Graves et al. 2014), fixed. The paper's eq. (17-18) is β = 1,
    under which the best slot weighs at most e² ≈ 7.4 times the worst, a near-uniform blur
    over 128 slots (docs/RESULTS.md, MANN: key strength).

    Args:
      keys: [B, H, M] float32, one key per head.
      memory: [B, N, M] float32 (M_{t-1}).
      strength: python float β > 0.
    Returns:
      [B, H, N] float32, each row sums to 1.
    """
    similarity = tf.einsum("bhm,bnm->bhn", tf.math.l2_normalize(keys, axis=-1),
                           tf.math.l2_normalize(memory, axis=-1))
    return tf.nn.softmax(strength * similarity, axis=-1)


def least_used(usage, n):
    """The n least used slots, from the usage weights of the previous step.

    Args:
      usage: [B, N] float32, w^u_{t-1}.
      n: python int, the number of heads.
    Returns:
      (weights [B, N] float32: w^lu, 1 at the n smallest usages and 0 elsewhere,
       slot [B] int32: the least used slot). Ties go to the lower slot index.
    """
    _, slots = tf.math.top_k(-usage, k=n)  # top_k keeps the lower index first among ties
    weights = tf.reduce_sum(tf.one_hot(slots, tf.shape(usage)[-1], dtype=usage.dtype), axis=1)
    return weights, slots[:, 0]


def write_weights(gate, prev_read_weights, prev_least_used):
    """w^w_t = σ(α) w^r_{t-1} + (1 − σ(α)) w^lu_{t-1}: rewrite the slot just read, or a free one.

    Args:
      gate: [B, H] float32, σ(α) in (0, 1).
      prev_read_weights: [B, H, N] float32, w^r_{t-1}.
      prev_least_used: [B, N] float32, w^lu_{t-1} (`least_used` of w^u_{t-1}).
    Returns:
      [B, H, N] float32.
    """
    gate = gate[..., None]
    return gate * prev_read_weights + (1.0 - gate) * prev_least_used[:, None, :]


def write_memory(memory, erase_slot, weights, keys):
    """M_t: M_{t-1} with its least used slot zeroed, plus every head's key written by weight.

    Args:
      memory: [B, N, M] float32, M_{t-1}.
      erase_slot: [B] int32, the least used slot of w^u_{t-1}.
      weights: [B, H, N] float32, w^w_t.
      keys: [B, H, M] float32, k_t.
    Returns:
      [B, N, M] float32: M_{t-1}·(1 − e_slot) + Σ_h w^w_t[h] ⊗ k_t[h].
    """
    kept = 1.0 - tf.one_hot(erase_slot, tf.shape(memory)[1], dtype=memory.dtype)
    return memory * kept[..., None] + tf.einsum("bhn,bhm->bnm", weights, keys)


def read_memory(weights, memory):
    """Read vectors r_t = Σ_i w^r_t(i) M_t(i): [B, H, N], [B, N, M] -> [B, H, M]."""
    return tf.einsum("bhn,bnm->bhm", weights, memory)


def update_usage(usage, read_weights, write_weights, decay):
    """w^u_t = γ w^u_{t-1} + Σ_h w^r_t + Σ_h w^w_t: [B, N], [B, H, N], [B, H, N] -> [B, N]."""
    return (decay * usage + tf.reduce_sum(read_weights, axis=1)
            + tf.reduce_sum(write_weights, axis=1))


@keras.saving.register_keras_serializable(package="tf_meta")
class MANN(SequenceLearner):
    """MANN: an LSTM controller with an external memory, least-recently-used access (LRUA).

    Step t of the support sequence is [features(x_t), onehot(y_{t-1})]
    (`to_sequence(delayed=True)`): every step predicts its own label before seeing it. Per
    step the LSTM reads that input and the previous reads, emits a key k_t = tanh(·) and a
    gate σ(α) per head, and `step` updates the memory (read weights from M_{t-1}, the least
    used slot of w^u_{t-1} erased, keys written, reads from M_t); a linear head on
    [controller output, reads] gives the logits. Every episode starts from a fresh
    `initial_state`; each query is one more step from its own copy of the post-support
    state, so queries never see each other or their labels.

    Reads are softmax(β · cosine) with a fixed β = `key_strength`, NTM's key strength: with
    the paper's β = 1 they blur and training stays on the label-bookkeeping plateau
    (docs/RESULTS.md, MANN: key strength). The loss (`meta_gradients`; the training `loss`
    metric) is the mean cross-entropy over support steps 1..S-1 (as the paper; step 0 has
    nothing to go on) and the queries; accuracy and test/validation loss are the queries'.

    Images enter as raw pixels (`backbones.pixels`), as the paper's did; any
    `LabelledEmbedding` works, e.g. a Conv-4 (BatchNorm: meta-batch statistics in training,
    moving at test). The support order is the one given: `make_episode_dataset` shuffles
    it, and a class-major order would teach the order, not the labels.

    Precision: only the item embedding computes in the learner's precision. The controller,
    its interface and head, and the memory stay float32: one step is a few matrix-vector
    products, too small to gain from bfloat16, and the reads are softmax(β · cosine)
    over 128 slots, which an 8-bit mantissa would blur.

    References:
      Santoro, Bartunov, Botvinick, Wierstra & Lillicrap, "Meta-Learning with
      Memory-Augmented Neural Networks", ICML 2016.
    """

    # Defaults: Santoro et al. 2016 (controller 200, memory 128 x 40, 4 read heads); γ 0.95 is
    # the reference implementations' (docs/PROTOCOLS.md); the key strength is ours (the
    # paper's is β = 1: docs/RESULTS.md, MANN: key strength).
    HYPERPARAMETERS = (
        Hyperparameter("controller_units", int, 200, "LSTM controller units", at_least(1)),
        Hyperparameter("memory_slots", int, 128, "memory rows", at_least(1)),
        Hyperparameter("memory_width", int, 40, "width of a memory row", at_least(1)),
        Hyperparameter("read_heads", int, 4, "read heads (each also writes)", at_least(1)),
        Hyperparameter("usage_decay", float, 0.95, "memory usage decay γ", in_unit_interval()),
        Hyperparameter("key_strength", float, 10.0, "β of its reads, softmax(β·cosine); 1 is "
                       "the paper's", POSITIVE),
    )
    EXTRA_METRICS = ("instance_accuracy",)
    META_OPTIMIZER = dict(SequenceLearner.META_OPTIMIZER, decay_rate=1.0)

    def __init__(self, backbone, **kwargs):
        super().__init__(backbone, **kwargs)
        if not hasattr(backbone, "ways"):
            raise ValueError("MANN classifies; its backbone must be a "
                             "sequence.LabelledEmbedding (see MANN.default_backbone)")
        if self.read_heads > self.memory_slots:
            raise ValueError(f"need read_heads <= memory_slots, got {self.read_heads} > "
                             f"{self.memory_slots}")
        controller_units, memory_width = self.controller_units, self.memory_width
        read_heads = self.read_heads
        reads = read_heads * memory_width
        # float32 at every precision (see the class docstring).
        self.controller = keras.layers.LSTMCell(controller_units, name="controller",
                                                dtype="float32")
        self.interface = keras.layers.Dense(read_heads * (memory_width + 1), name="interface",
                                            dtype="float32")
        self.head = keras.layers.Dense(backbone.ways, name="head", dtype="float32")
        self.controller.build((None, backbone.units + backbone.ways + reads))
        self.interface.build((None, controller_units))
        self.head.build((None, controller_units + reads))

    @staticmethod
    def item_embedding(input_shape, network=None):
        """The paper's input for images, raw pixels (`backbones.pixels`), unless a `network`
        is named; an MLP for vectors."""
        if len(input_shape) == 3 and network is None:
            return backbones.pixels(input_shape)
        return backbones.embedding_for(input_shape, network)

    def initial_state(self, batch):
        """A fresh state for `batch` episodes: (h, c, memory, usage, read weights, reads)."""
        units, slots, heads = self.controller_units, self.memory_slots, self.read_heads
        return (tf.zeros([batch, units]), tf.zeros([batch, units]),
                tf.fill([batch, slots, self.memory_width], 1e-6),  # nonzero: cosine defined
                tf.zeros([batch, slots]), tf.zeros([batch, heads, slots]),
                tf.zeros([batch, heads * self.memory_width]))

    def step(self, state, inputs, training):
        """One time step: (state, inputs [B, C]) -> (state, logits [B, max_ways])."""
        h, c, memory, usage, prev_read_weights, reads = state
        heads, width = self.read_heads, self.memory_width
        out, (h, c) = self.controller(tf.concat([inputs, reads], axis=-1), [h, c],
                                      training=training)
        interface = self.interface(out)
        keys = tf.tanh(tf.reshape(interface[:, :heads * width], [-1, heads, width]))
        gate = tf.sigmoid(interface[:, heads * width:])
        prev_least_used, erase_slot = least_used(usage, heads)
        read_weights = cosine_read_weights(keys, memory, self.key_strength)
        written = write_weights(gate, prev_read_weights, prev_least_used)
        memory = write_memory(memory, erase_slot, written, keys)
        reads = tf.reshape(read_memory(read_weights, memory), [-1, heads * width])
        usage = update_usage(usage, read_weights, written, self.usage_decay)
        logits = self.head(tf.concat([out, reads], axis=-1))
        return (h, c, memory, usage, read_weights, reads), logits

    def run(self, steps, training):
        """The model over whole sequences from a fresh state.

        Args:
          steps: [B, L, C] float32 inputs (`to_sequence`), L >= 1.
        Returns:
          (logits [B, L, max_ways], final state).
        """
        batch = tf.shape(steps)[0]
        first = (self.initial_state(batch), tf.zeros([batch, self.max_ways]))
        states, logits = tf.scan(lambda carry, x: self.step(carry[0], x, training),
                                 tf.transpose(steps, [1, 0, 2]), initializer=first)
        final = tf.nest.map_structure(lambda s: s[-1], states)
        return tf.transpose(logits, [1, 0, 2]), final

    def episode_logits(self, episodes, training):
        """(support logits [B, S, ways], query logits [B, Q, ways]) of a meta-batch.

        Support step t's logits are its prediction of y_t, made before y_t is shown.
        """
        support, query = self.backbone.embed_episodes(episodes.support_x, episodes.query_x,
                                                      training)
        support_steps, query_steps = to_sequence(support, episodes.support_y, query,
                                                 self.max_ways, delayed=True)
        support_logits, state = self.run(support_steps, training)
        batch, queries = tf.shape(query_steps)[0], tf.shape(query_steps)[1]
        # Every query continues its own copy of the post-support state: [B*Q, ...].
        copies = tf.nest.map_structure(lambda s: tf.repeat(s, queries, axis=0), state)
        _, query_logits = self.step(
            copies, tf.reshape(query_steps, [-1, query_steps.shape[-1]]), training)
        query_logits = tf.reshape(query_logits, [batch, queries, self.max_ways])
        ways = num_ways(episodes.support_y)
        return support_logits[..., :ways], query_logits[..., :ways]

    def batch_logits(self, episodes, training):
        return self.episode_logits(episodes, training)[1]

    def sequence_logits(self, x, y, training):
        """Predictions along labelled sequences, each label shown one step late.

        Args:
          x: [B, L, *input_shape] items; y: [B, L] int labels in [0, max_ways).
        Returns:
          [B, L, max_ways] float32; step t predicts y_t having seen y_0..y_{t-1}.
        """
        features, _ = self.backbone.embed_episodes(x, x[:, :0], training)
        steps, _ = to_sequence(features, y, features[:, :0], self.max_ways, delayed=True)
        return self.run(steps, training)[0]

    def sequence_loss(self, support_y, support_logits, query_y, query_logits):
        """Mean cross-entropy over support steps 1..S-1 and the queries: [B, S], [B, S, N],
        [B, Q], [B, Q, N] -> [B]."""
        def total(y, logits):
            return tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True), axis=-1)

        count = tf.shape(support_y)[1] - 1 + tf.shape(query_y)[1]
        return ((total(support_y[:, 1:], support_logits[:, 1:]) + total(query_y, query_logits))
                / tf.cast(count, tf.float32))

    def meta_gradients(self, episodes):
        with tf.GradientTape() as tape:
            support_logits, logits = self.episode_logits(episodes, training=True)
            loss = tf.reduce_mean(self.sequence_loss(episodes.support_y, support_logits,
                                                     episodes.query_y, logits), axis=0)
            scaled = self.scaled_loss(loss)
        return tape.gradient(scaled, self.trainable_variables), loss, logits
