"""Memory-Augmented Neural Networks with LRU access (Santoro et al., ICML 2016)."""

import keras
import numpy as np
import tensorflow as tf

from tf_meta import backbones
from tf_meta.algorithms.base import SequenceLearner
from tf_meta.data.pipeline import episode_stream
from tf_meta.data.sampling import sample_episode
from tf_meta.episode import num_ways, to_sequence

# The paper's instance-accuracy protocol: 5 classes, 10 samples each, accuracy at these
# presentations of a class.
INSTANCE_CLASSES, INSTANCE_SAMPLES = 5, 10
INSTANCE_PRESENTATIONS = (1, 2, 3, 4, 5, 10)


# The memory algebra, as pure functions of one step over a meta-batch of B memories with
# N slots of width M, addressed by H heads (each head reads and writes with one key).

def cosine_read_weights(keys, memory, strength=1.0):
    """Read weights: softmax over slots of β times the cosine similarity of key and slot.

    The paper's eq. (17-18) is β = 1. A cosine lies in [-1, 1], so there the best slot
    weighs at most e² ≈ 7.4 times the worst: over 128 slots every read is a near-uniform
    blur of the memory (see `MANN`). β is NTM's key strength (Graves et al. 2014), fixed.

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


class MANN(SequenceLearner):
    """MANN: an LSTM controller with an external memory, least-recently-used access (LRUA).

    The learner reads the support set as a sequence, then answers each query as one more
    step. Step t's input is [features(x_t), onehot(y_{t-1})] (`to_sequence(delayed=True)`):
    the label arrives one step late, so every step predicts its own label before seeing
    it. Per step the controller reads that input and the previous read vectors, emits a key
    k_t = tanh(·) per head and a gate σ(α) per head, and the memory is updated by
    `cosine_read_weights` (from M_{t-1}), `write_weights`, `write_memory` (the least used
    slot of w^u_{t-1} erased first), `read_memory` (from M_t) and `update_usage`, the order
    of the paper's reference implementations. The logits are a linear head on [controller
    output, read vectors]. Memory is reset for every episode (every row of the meta-batch
    has its own state): initial memory 1e-6 everywhere, zero usage, read weights and
    reads.

    Key strength (not in the paper): the read weights are softmax(β · cosine) with a fixed
    β = `key_strength`, NTM's key strength; the paper's eq. (17-18) is β = 1. With β = 1 a
    read over 128 slots is a near-uniform blur (no slot weighs more than e² times another),
    and the model sat at the plateau of label bookkeeping (guess a label not yet shown,
    chance on the binding) for all of 24,000 Omniglot episodes, and for ~175,000 episodes
    of a 3-class toy task that β = 10 learns in 16,000 (docs/RESULTS.md).

    Queries: the state after the support set is copied once per query, and each query is
    its own next step from that state, so queries never see each other and their labels
    are never read. `query_logits` returns [Q, ways].

    Training objective (`meta_gradients`): per episode, the mean cross-entropy over every
    step that predicts a label it has not yet been shown: support steps 1..S-1 (as the
    paper, which scores every step of its episodes; step 0 has nothing to go on) and the Q
    queries. The training `loss` metric is that objective; the accuracy metric and the
    test/validation loss are the queries' only.

    Features: `default_backbone` gives images as their raw pixels, rescaled and flattened
    (`backbones.pixels`), as the paper fed them (it downsampled to 20x20 first), and vectors
    through an MLP. Any `LabelledEmbedding` works, e.g. a Conv-4 trained end to end, whose
    BatchNorm then uses the meta-batch's statistics in training and the moving ones at test
    (on a CPU it costs ~7x the raw pixels' time per step).
    Support order: `make_episode_dataset` already shuffles each support set with a
    stateless seed, so the learner keeps the order it is given (a class-major order would
    let the model learn the order instead of the labels).

    The label width and the head have `max_ways` outputs (the backbone's `ways`); an
    episode with fewer classes uses the first ones, more is an error.

    References:
      Santoro, Bartunov, Botvinick, Wierstra & Lillicrap, "Meta-Learning with
      Memory-Augmented Neural Networks", ICML 2016.
    """

    def __init__(self, backbone, controller_units=200, memory_slots=128, memory_width=40,
                 read_heads=4, usage_decay=0.95, key_strength=10.0, **kwargs):
        super().__init__(backbone, **kwargs)
        if self.regression or not hasattr(backbone, "ways"):
            raise ValueError("MANN classifies; its backbone must be a "
                             "backbones.LabelledEmbedding (see MANN.default_backbone)")
        if min(controller_units, memory_slots, memory_width, read_heads) < 1:
            raise ValueError(f"MANN sizes must be positive, got controller_units="
                             f"{controller_units}, memory_slots={memory_slots}, "
                             f"memory_width={memory_width}, read_heads={read_heads}")
        if read_heads > memory_slots or not 0 < usage_decay <= 1 or not key_strength > 0:
            raise ValueError(f"need read_heads <= memory_slots, 0 < usage_decay <= 1 and "
                             f"key_strength > 0, got {read_heads}, {memory_slots}, "
                             f"{usage_decay}, {key_strength}")
        self.controller_units, self.memory_slots = controller_units, memory_slots
        self.memory_width, self.read_heads, self.usage_decay = memory_width, read_heads, usage_decay
        self.key_strength = float(key_strength)
        reads = read_heads * memory_width
        self.controller = keras.layers.LSTMCell(controller_units, name="controller")
        self.interface = keras.layers.Dense(read_heads * (memory_width + 1), name="interface")
        self.head = keras.layers.Dense(backbone.ways, name="head")
        self.controller.build((None, backbone.units + backbone.ways + reads))
        self.interface.build((None, controller_units))
        self.head.build((None, controller_units + reads))

    @staticmethod
    def item_embedding(input_shape):
        """The paper's input for images, raw pixels (`backbones.pixels`); an MLP for vectors."""
        if len(input_shape) == 3:
            return backbones.pixels(input_shape)
        return backbones.embedding_for(input_shape)

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
        return tape.gradient(loss, self.trainable_variables), loss, logits


def presentation_index(labels):
    """Which presentation of its class each step is: 1 at a class's first step, 2 at its second...

    Args:
      labels: [B, L] int.
    Returns:
      [B, L] int32.
    """
    labels = tf.cast(labels, tf.int32)
    onehot = tf.one_hot(labels, tf.reduce_max(labels) + 1, dtype=tf.int32)  # [B, L, C]
    shown_before = tf.cumsum(onehot, axis=1, exclusive=True)
    return tf.reduce_sum(shown_before * onehot, axis=-1) + 1


def instance_accuracy(learner, source, episodes=1000, seed=0, classes=INSTANCE_CLASSES,
                      samples=INSTANCE_SAMPLES, presentations=INSTANCE_PRESENTATIONS,
                      meta_batch_size=50):
    """The MANN paper's instance accuracy: accuracy at the k-th presentation of a class.

    Each episode draws `classes` classes of `source` and `samples` examples of each
    (`sampling.sample_episode`, stateless in `seed`), shuffled into one sequence of
    classes × samples steps with episode-relative labels shown one step late
    (`MANN.sequence_logits`). A step is the k-th presentation when its class appeared k − 1
    times before it in the episode; its prediction (argmax over the first `classes`
    outputs) is made before its label is shown.

    Args:
      learner: a MANN.
      source: data.Source with >= `classes` classes of >= `samples` examples each.
      episodes, seed: size and seed of the fixed episode set.
      classes, samples: the paper's 5 classes × 10 samples (episodes of 50 steps).
      presentations: the k to report, each <= samples.
      meta_batch_size: episodes per forward pass.

    Returns:
      dict k -> accuracy (python float) over every k-th presentation, for k in presentations.

    Raises:
      ValueError: the source or the learner's head cannot serve these episodes.
    """
    if classes > learner.max_ways or classes > source.num_classes:
        raise ValueError(f"{classes}-class episodes need a head of >= {classes} outputs "
                         f"(has {learner.max_ways}) and a source of >= {classes} classes "
                         f"(has {source.num_classes})")
    if min(source.counts) < samples or max(presentations) > samples:
        raise ValueError(f"{samples} samples per class need that many examples in every "
                         f"class (fewest: {min(source.counts)}) and presentations <= "
                         f"{samples}, got {presentations}")
    examples, counts = tf.constant(source.examples), tf.constant(source.counts, tf.int32)
    stream = episode_stream(
        lambda s: sample_episode(s, examples, counts, classes, samples, 0),
        meta_batch_size, seed, num_episodes=episodes)

    @tf.function
    def score(x, y):
        logits = learner.sequence_logits(x, y, training=False)[..., :classes]
        hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(y, tf.int32))
        return tf.cast(hits, tf.float32), presentation_index(y)

    hits, shown = np.zeros(samples + 1), np.zeros(samples + 1)
    for episode in stream:
        hit, index = (t.numpy().ravel() for t in score(episode.support_x, episode.support_y))
        hits += np.bincount(index, weights=hit, minlength=samples + 1)
        shown += np.bincount(index, minlength=samples + 1)
    return {k: float(hits[k] / shown[k]) for k in presentations}
