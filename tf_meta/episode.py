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
