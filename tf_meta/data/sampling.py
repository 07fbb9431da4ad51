"""Pure TF episode sampling: a stateless seed in, class ids, example ids and an Episode out.

Everything here is a function of its seed (`tf.random.stateless_*`), so the same seed gives
the same episode byte for byte, in any process, at any position in a stream.
"""

import tensorflow as tf

from tf_meta.episode import Episode


def sample_class_ids(seed, num_classes, ways):
    """`ways` distinct classes, without replacement, in random order.

    Args:
      seed: [2] int stateless seed.
      num_classes: scalar int, classes in the source.
      ways: python int.

    Returns:
      [ways] int32 class ids; position i becomes episode label i.
    """
    # top_k of i.i.d. uniforms is a uniform random ordered subset.
    scores = tf.random.stateless_uniform([num_classes], seed)
    return tf.math.top_k(scores, k=ways, sorted=True).indices


def sample_example_ids(seed, counts, max_examples, examples_per_class):
    """Distinct example ids within each sampled class, without replacement.

    Args:
      seed: [2] int stateless seed.
      counts: [ways] int32, examples available in each sampled class.
      max_examples: python int, row length of the source (padding included).
      examples_per_class: python int, shots + query_shots.

    Returns:
      [ways, examples_per_class] int32 ids, each < its class's count.
    """
    scores = tf.random.stateless_uniform([tf.shape(counts)[0], max_examples], seed)
    valid = tf.range(max_examples)[None, :] < counts[:, None]
    scores = tf.where(valid, scores, -1.0)  # padding rows sort last, never drawn
    return tf.math.top_k(scores, k=examples_per_class, sorted=True).indices


def sample_episode(seed, examples, counts, ways, shots, query_shots):
    """One N-way K-shot Episode from a class-indexed source.

    Labels are the position of each class in the sampled class list, so they lie in
    [0, ways); support and query are drawn from disjoint examples and each is shuffled.

    Args:
      seed: [2] int stateless seed.
      examples: [classes, max_examples, *input_shape] tensor.
      counts: [classes] int32 tensor, real examples per class (all >= shots + query_shots).
      ways, shots, query_shots: python ints.

    Returns:
      Episode, support [ways*shots, ...], query [ways*query_shots, ...].
    """
    class_seed, example_seed, support_seed, query_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4))
    class_ids = sample_class_ids(class_seed, tf.shape(counts)[0], ways)
    example_ids = sample_example_ids(example_seed, tf.gather(counts, class_ids),
                                     examples.shape[1], shots + query_shots)
    ids = tf.stack([tf.broadcast_to(class_ids[:, None], tf.shape(example_ids)), example_ids], -1)
    x = tf.gather_nd(examples, ids)  # [ways, shots + query_shots, *input_shape]
    y = tf.broadcast_to(tf.range(ways)[:, None], [ways, shots + query_shots])
    support_x, support_y = _flat_shuffled(support_seed, x[:, :shots], y[:, :shots])
    query_x, query_y = _flat_shuffled(query_seed, x[:, shots:], y[:, shots:])
    return Episode(support_x, support_y, query_x, query_y)


def _flat_shuffled(seed, x, y):
    """[ways, n, ...] -> [ways*n, ...] in a seeded random order."""
    x = tf.reshape(x, [-1, *x.shape[2:]])
    y = tf.reshape(y, [-1])
    order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(y)[0]), seed)
    return tf.gather(x, order), tf.gather(y, order)
