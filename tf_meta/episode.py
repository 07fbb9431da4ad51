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


def as_episode(data):
    """An Episode from what a dataset yields or a caller passes.

    Args:
      data: an Episode; a tuple or list of its fields in order (support_x, support_y,
        query_x[, query_y]); or a dict with those field names (query_y may be left out,
        for predictions); or a 1-tuple holding one of these (Keras's predict_on_batch
        packs its x so).
    Returns:
      Episode (query_y None when left out).
    Raises:
      ValueError: one line naming the fields expected and what was given.
    """
    if isinstance(data, Episode):
        return data
    if isinstance(data, tuple) and len(data) == 1:
        return as_episode(data[0])
    fields = Episode._fields
    if isinstance(data, dict):
        unknown, missing = sorted(set(data) - set(fields)), [f for f in fields[:3] if f not in data]
        if unknown or missing:
            raise ValueError(f"an episode dict has the keys {fields} (query_y may be left out); "
                             f"got {sorted(data)}")
        return Episode(*(data.get(f) for f in fields))
    if isinstance(data, (tuple, list)) and len(data) in (3, 4):
        return Episode(*data, *([None] * (4 - len(data))))
    raise ValueError(f"expected an Episode, or a tuple or dict of its fields {fields}; got "
                     f"{type(data).__name__}" + (f" of {len(data)}" if isinstance(
                         data, (tuple, list)) else ""))


def num_ways(support_y):
    """Number of classes in an episode, read from its support labels.

    Args:
      support_y: [..., S] int, labels in [0, ways) with every class present.

    Returns:
      scalar int32 tensor: max label + 1 over the last axis (and any batch axes).
    """
    return tf.cast(tf.reduce_max(support_y), tf.int32) + 1
