"""The Episode: one N-way K-shot task, the unit every tf_meta learner consumes."""

from typing import NamedTuple

import tensorflow as tf


class Episode(NamedTuple):
    """One N-way K-shot task. Labels are episode-relative ints in [0, ways).

    Shapes (unbatched): support_x [ways*shots, *input_shape], support_y [ways*shots],
    query_x [ways*query_shots, *input_shape], query_y [ways*query_shots].
    After `.batch(meta_batch_size)` every field gains a leading meta-batch axis.

    Images stay in their stored dtype (uint8 pixels for image sources); learners
    rescale inside their graph, so an exported model takes the same pixels.
    """

    support_x: tf.Tensor
    support_y: tf.Tensor
    query_x: tf.Tensor
    query_y: tf.Tensor


def num_ways(support_y):
    """Number of classes in an episode, read from its support labels.

    Args:
      support_y: [..., S] int, labels in [0, ways) with every class present.

    Returns:
      scalar int32 tensor: max label + 1 over the last axis (and any batch axes).
    """
    return tf.cast(tf.reduce_max(support_y), tf.int32) + 1



def to_sequence(support_features, support_y, query_features, depth, delayed, label_scale=1.0):
    """An episode as the input steps of a sequence learner: [features, one-hot label].

    The support items come first, with their labels; each query is then one more step,
    whose label channel never holds the query's own label:
      delayed=False (SNAIL): support step t carries onehot(y_t); query steps carry zeros.
      delayed=True (MANN): the label arrives one step late. Support step t carries
        onehot(y_{t-1}) (zeros at t = 0), and a query step, the step after the support
        set, carries onehot(y_{S-1}), the last support label.
    Leading (meta-batch) axes are kept.

    Args:
      support_features: [..., S, D] float.
      support_y: [..., S] int, labels in [0, depth).
      query_features: [..., Q, D] float (Q may be 0).
      depth: python int, width of the one-hot label channel.
      delayed: MANN's one-step label delay (see above).
      label_scale: python float, the value of a label's hot entry (SNAIL scales it up).

    Returns:
      (support_steps [..., S, D + depth], query_steps [..., Q, D + depth]).

    Raises:
      InvalidArgumentError (in graph): a label >= depth.
    """
    check = tf.debugging.assert_less(  # a label >= depth would silently become all zeros
        tf.cast(support_y, tf.int32), depth,
        message=f"labels must be below {depth}, the label width (the learner's max_ways)")
    with tf.control_dependencies([check]):
        onehot = label_scale * tf.one_hot(support_y, depth,
                                          dtype=support_features.dtype)  # [..., S, depth]
    no_label = tf.zeros_like(query_features[..., :1])  # [..., Q, 1]
    if delayed:
        support_labels = tf.concat([tf.zeros_like(onehot[..., :1, :]), onehot[..., :-1, :]],
                                   axis=-2)
        query_labels = no_label + onehot[..., -1:, :]  # broadcast to [..., Q, depth]
    else:
        support_labels = onehot
        query_labels = no_label + tf.zeros_like(onehot[..., :1, :])
    return (tf.concat([support_features, support_labels], axis=-1),
            tf.concat([query_features, query_labels], axis=-1))
