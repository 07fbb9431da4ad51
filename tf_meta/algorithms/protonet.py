"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""

import keras
import tensorflow as tf

from tf_meta.algorithms.base import BatchedLearner
from tf_meta.episode import num_ways
from tf_meta.precision import full_precision


def class_means(support_emb, support_y, ways):
    """Prototypes: mean support embedding of each class.

    Args:
      support_emb: [B, S, D] float32.
      support_y: [B, S] int, labels in [0, ways).
      ways: scalar int.
    Returns:
      [B, ways, D] float32. Classes may have unequal shot counts.
    """
    onehot = tf.one_hot(support_y, ways, dtype=support_emb.dtype)  # [B, S, N]
    sums = tf.einsum("bsn,bsd->bnd", onehot, support_emb)
    return sums / tf.reduce_sum(onehot, axis=1)[..., None]


def squared_euclidean(query_emb, prototypes):
    """[B, Q, D], [B, N, D] -> [B, Q, N] squared Euclidean distances."""
    diff = query_emb[:, :, None, :] - prototypes[:, None, :, :]
    return tf.reduce_sum(tf.square(diff), axis=-1)


@keras.saving.register_keras_serializable(package="tf_meta")
class ProtoNet(BatchedLearner):
    """Prototypical Networks: logits are negative squared distances to class means.

    `batch_logits` embeds the support and query images of the whole meta-batch in one
    backbone pass (as the reference code concatenates xs and xq), so BatchNorm uses
    batch statistics over support + query in training and moving averages at test.
    Loss: cross-entropy of the softmax over negative distances (the paper's).

    References:
      Snell et al., "Prototypical Networks for Few-shot Learning", NeurIPS 2017.
    """

    def batch_logits(self, episodes, training):
        support_x, query_x = episodes.support_x, episodes.query_x
        batch, shots_total, queries = (tf.shape(support_x)[0], tf.shape(support_x)[1],
                                       tf.shape(query_x)[1])
        input_shape = support_x.shape[2:]
        flat = tf.concat([tf.reshape(support_x, [-1, *input_shape]),
                          tf.reshape(query_x, [-1, *input_shape])], axis=0)
        emb = full_precision(self(flat, training=training))  # [B*S + B*Q, D]
        n_support = batch * shots_total
        support_emb = tf.reshape(emb[:n_support], [batch, shots_total, -1])
        query_emb = tf.reshape(emb[n_support:], [batch, queries, -1])
        prototypes = class_means(support_emb, episodes.support_y, num_ways(episodes.support_y))
        return -squared_euclidean(query_emb, prototypes)
