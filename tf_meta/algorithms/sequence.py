"""The sequence family (MANN, SNAIL): an episode read as labelled steps by one learner.

Items are embedded (`LabelledEmbedding`), turned into [embedding, one-hot label] steps
(`to_sequence`), and a `SequenceLearner` reads them; the label width and the output head
are one size, `max_ways`, fixed when the learner is built.
"""

import keras
import tensorflow as tf
from keras import ops

from tf_meta import backbones
from tf_meta.algorithms.base import BatchedLearner
from tf_meta.precision import full_precision


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


@keras.saving.register_keras_serializable(package="tf_meta")
class LabelledEmbedding(keras.Model):
    """An item embedding that also fixes the label width of a sequence learner (MANN, SNAIL).

    MANN and SNAIL read each item as [embedding(x), one-hot label] and answer with a head
    over the same `ways` classes. Both widths are fixed when the learner is built, so the
    backbone their `default_backbone(input_shape, ways)` returns carries `ways`.

    Call: [batch, *input_shape] -> [batch, D], the wrapped embedding's output.
    """

    def __init__(self, embedding, ways, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{embedding.name}_{ways}way"), **kwargs)
        if ways < 1:
            raise ValueError(f"ways must be positive, got {ways}")
        self.embedding = embedding
        self.ways = int(ways)
        self.built = embedding.built

    def get_config(self):
        return {"name": self.name, "ways": self.ways,
                "embedding": keras.saving.serialize_keras_object(self.embedding)}

    @classmethod
    def from_config(cls, config):
        return cls(**dict(config, embedding=keras.saving.deserialize_keras_object(
            config["embedding"])))

    @property
    def units(self):
        """D, the width of one embedded item."""
        return self.embedding.output_shape[-1]

    def call(self, x, training=False):
        return self.embedding(x, training=training)

    def embed_episodes(self, support_x, query_x, training):
        """Support and query items of a meta-batch embedded in one pass, as ProtoNet does.

        So BatchNorm uses one set of batch statistics over the meta-batch in training (and
        the moving statistics at test, where items do not affect each other).

        Args:
          support_x: [B, S, *input_shape]; query_x: [B, Q, *input_shape].
        Returns:
          (support [B, S, D], query [B, Q, D]) float32.
        """
        batch, shots = ops.shape(support_x)[0], ops.shape(support_x)[1]
        items = ops.concatenate([ops.reshape(support_x, (-1, *support_x.shape[2:])),
                                 ops.reshape(query_x, (-1, *query_x.shape[2:]))], axis=0)
        embedded = full_precision(self(items, training=training))  # [B*S + B*Q, D]
        return (ops.reshape(embedded[:batch * shots], (batch, shots, embedded.shape[-1])),
                ops.reshape(embedded[batch * shots:], (batch, -1, embedded.shape[-1])))


class SequenceLearner(BatchedLearner):
    """A black-box learner reading [embedding(x), one-hot label] steps (MANN, SNAIL).

    Its backbone is a `LabelledEmbedding`, which fixes the label width and the size of
    the output head (`max_ways`) when the learner is built. An episode with fewer classes
    uses the first outputs; more is an error, raised in the graph (`to_sequence`).
    """

    HAS_HEAD = True

    @staticmethod
    def item_embedding(input_shape, network=None):
        """The embedding `default_backbone` labels: Conv-4 (or `network`) for images, an MLP
        for vectors."""
        return backbones.embedding_for(input_shape, network)

    @classmethod
    def default_backbone(cls, input_shape, ways, network=None):
        if not ways:
            raise ValueError("MANN and SNAIL need `ways`, the width of their labels and head")
        return LabelledEmbedding(cls.item_embedding(input_shape, network), ways)

    @property
    def max_ways(self):
        """The width of the one-hot labels and of the output head."""
        return self.backbone.ways
