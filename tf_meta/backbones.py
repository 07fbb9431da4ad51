"""Plain Keras backbones shared by the learners (no meta-specific layer twins)."""

import keras
from keras import ops


class BatchNormalization(keras.layers.BatchNormalization):
    """Keras BatchNormalization whose batch moments are differentiable to second order.

    Keras 3's TF backend computes the variance as mean((x - stop_gradient(mean))²). First
    derivatives are unaffected (the dropped term sums to zero), but the second derivative
    MAML needs loses a term, silently. Here the variance is mean((x - mean)²), exactly.
    Forward values and everything else (moving statistics, serialisation) are Keras's.
    """

    def _moments(self, inputs, mask):
        if mask is not None:  # the masked path of the base class has no stop_gradient
            return super()._moments(inputs, mask)
        mean = ops.mean(inputs, axis=self._reduction_axes, keepdims=True)
        variance = ops.mean(ops.square(inputs - mean), axis=self._reduction_axes)
        return ops.squeeze(mean, axis=self._reduction_axes), variance


def conv_block(filters, pool=True, name=None):
    """conv3x3 -> BatchNorm -> ReLU (-> maxpool 2x2): the Conv-4 building block.

    BatchNorm momentum 0.9 is PyTorch's default (0.1 there), which the reference
    implementations of these papers ran with; Keras's 0.99 lags far behind in short runs.
    """
    layers = [keras.layers.Conv2D(filters, 3, padding="same"),
              BatchNormalization(momentum=0.9),
              keras.layers.ReLU()]
    if pool:
        layers.append(keras.layers.MaxPooling2D(2))
    return keras.Sequential(layers, name=name)


def conv4(input_shape, filters=64, name="conv4"):
    """The Conv-4 embedding of Vinyals et al. / Snell et al. / Finn et al.: 4 x conv_block.

    Takes uint8-range pixels and rescales to [0, 1] itself, so the exported graph holds
    the preprocessing. For 28x28 inputs the embedding is [batch, filters] (1x1 maps).

    Args:
      input_shape: (H, W, C).
    Returns:
      keras.Sequential: [batch, H, W, C] pixels -> [batch, D] float32.
    """
    return keras.Sequential(
        [keras.Input(input_shape), keras.layers.Rescaling(1.0 / 255)]
        + [conv_block(filters, name=f"block{i}") for i in range(4)]
        + [keras.layers.Flatten()], name=name)


def mlp(input_shape, units=(64, 64), name="mlp"):
    """ReLU MLP for vector inputs: [batch, *input_shape] -> [batch, units[-1]], linear output."""
    layers = [keras.Input(input_shape), keras.layers.Flatten()]
    for i, n in enumerate(units):
        layers.append(keras.layers.Dense(n, activation="relu" if i < len(units) - 1 else None))
    return keras.Sequential(layers, name=name)


def sinusoid_mlp(units=(40, 40)):
    """The MAML paper's sinusoid regressor: 1 -> 40 -> 40 -> 1, ReLU hidden layers."""
    return keras.Sequential([keras.Input((1,))]
                            + [keras.layers.Dense(n, activation="relu") for n in units]
                            + [keras.layers.Dense(1)], name="sinusoid_mlp")


def embedding_for(input_shape):
    """Default embedding for an input shape: conv4 for images, mlp for vectors."""
    return conv4(input_shape) if len(input_shape) == 3 else mlp(input_shape)


def classifier_for(input_shape, outputs):
    """embedding_for(input_shape) followed by a linear head: [batch, ...] -> [batch, outputs]."""
    embedding = embedding_for(input_shape)
    return keras.Sequential([embedding, keras.layers.Dense(outputs, name="head")],
                            name=f"{embedding.name}_classifier")
