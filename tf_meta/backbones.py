"""Plain Keras backbones shared by the learners (no meta-specific layer twins)."""

import functools

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="tf_meta")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras BatchNormalization whose batch moments are differentiable to second order.

    Keras 3's TF backend computes the variance as mean((x - stop_gradient(mean))²). First
    derivatives are unaffected (the dropped term sums to zero), but the second derivative
    MAML needs loses a term, silently. Here every training-mode path is exact:

    - float32 feature maps [B, H, W, C] inside a graph (tf.function: training, evaluation,
      exports; Conv-4, every learner's hot path), or bfloat16/float16 ones under a mixed
      precision policy: TensorFlow's fused kernel
      (`tf.compat.v1.nn.fused_batch_norm`, its only Python entry point: one op forward and
      one backward instead of a dozen elementwise ones; a MAML meta-iteration 14% shorter,
      Reptile 12% more episodes/s, docs/PERFORMANCE.md; in bfloat16 it takes the maps as
      they are, where Keras's layer casts them to float32 and back: a Conv-4 forward and
      backward of 360 images ran 86 ms against 210 ms so, float32 fused 141 ms,
      `benchmarks/batchnorm_precision.py`). The
      gradient TF registers for the
      fused backward op differentiates the unfused batch-norm gradient, whose stop_gradient
      on the mean drops a term that is exactly zero at first order, so second derivatives
      through it are exact (tests/test_fast_weights.py checks them against the path below).
    - anything else (eager calls, float64, masks, other ranks): moments as mean(x) and
      mean((x - mean)²), both differentiated through. Eager calls stay off the fused
      kernel because its eager oneDNN variant drifted: after two eager MAML inner steps on
      tensors as weights it was 1e-3 off the graph and explicit results, which agree to
      1e-5 (TF 2.21).

    Inference mode (moving statistics), moving-statistic updates (biased batch variance, as
    Keras) and serialisation are Keras's.
    """

    def _moments(self, inputs, mask):
        if mask is not None:  # the masked path of the base class has no stop_gradient
            return super()._moments(inputs, mask)
        mean = ops.mean(inputs, axis=self._reduction_axes, keepdims=True)
        variance = ops.mean(ops.square(inputs - mean), axis=self._reduction_axes)
        return ops.squeeze(mean, axis=self._reduction_axes), variance

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        # Under a mixed policy the kernel takes bfloat16 (float16) maps with float32 scale and
        # offset, and computes the moments in float32.
        # Without a scale (cbfinn/maml's offset-only BatchNorm) or offset, the kernel gets the
        # constant 1 or 0 in its place.
        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=self.epsilon, is_training=True)
        # The kernel returns the unbiased variance; Keras's moving variance tracks the biased.
        count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs

    def _fusable(self, inputs, training, mask):
        """Whether the fused kernel computes exactly what the base class's call would."""
        return (bool(training) and not tf.executing_eagerly() and self.trainable
                and mask is None and not self.renorm and len(inputs.shape) == 4
                and self.axis in (-1, 3) and inputs.dtype.name == self.compute_dtype
                and self.compute_dtype in ("float32", "bfloat16", "float16"))


@keras.saving.register_keras_serializable(package="tf_meta")
class Block(keras.Sequential):
    """A keras.Sequential for use inside a network: it takes its input in the dtype it comes in.

    A keras.Sequential converts its input to its Input's dtype, float32 unless declared (a
    block built by its first call declares float32: tf_meta sets a mixed policy after
    building), and its first layer casts it back to the compute dtype. Nested under
    mixed_bfloat16, every feature map crossing into a block is cast twice forward and twice
    backward for nothing: three quarters of RelationNet's bfloat16 cast time, and 390 of
    Reptile's 1,136 casts per meta-iteration (docs/PERFORMANCE.md, "Precision"). A Block
    runs its layers one after another on its input as it comes (a float input not in the
    compute dtype is cast, as by any layer) and is otherwise a keras.Sequential: the same
    layers, weights, config and checkpoints.
    """

    @property
    def input_dtype(self):
        return self.compute_dtype

    def call(self, inputs, training=None):
        for layer in self.layers:
            inputs = layer(inputs, training=training)
        return inputs


def conv_block(filters, pool=True, padding="same", strides=1, scale=True, name=None):
    """conv3x3 (stride `strides`) -> BatchNorm -> ReLU (-> maxpool 2x2): the Conv-4 block.

    BatchNorm momentum 0.9 is PyTorch's default (0.1 there), which the reference
    implementations of these papers ran with; Keras's 0.99 lags far behind in short runs.
    `scale=False` drops BatchNorm's scale γ (the offset β stays).
    """
    layers = [keras.layers.Conv2D(filters, 3, strides=strides, padding=padding),
              BatchNormalization(momentum=0.9, scale=scale),
              keras.layers.ReLU()]
    if pool:
        layers.append(keras.layers.MaxPooling2D(2))
    return Block(layers, name=name)


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


def strided_conv4(input_shape, filters=64, reduce="flatten", scale=True, name="conv4_strided"):
    """The Omniglot network of the MAML and Reptile papers: 4 x [conv3x3 stride 2 SAME,
    BatchNorm, ReLU], no pooling layers; 28x28 images become 2x2 maps.

    reduce="flatten" flattens the maps ([batch, 4 * filters] for 28x28), as
    openai/supervised-reptile (supervised_reptile/models.py, OmniglotModel) does before its
    dense head; reduce="mean" averages them over space ([batch, filters]), as cbfinn/maml
    (maml.py, forward_conv, for Omniglot; its utils.py conv_block strides when max_pool is
    off). cbfinn/maml's BatchNorm is tf.contrib.layers.batch_norm with its defaults, an
    offset and no scale: `scale=False`. Pixels are rescaled to [0, 1] in the graph, as in
    `conv4`.

    Returns:
      keras.Sequential: [batch, H, W, C] pixels -> [batch, D] float32.
    """
    if reduce not in ("flatten", "mean"):
        raise ValueError(f"reduce must be 'flatten' or 'mean', got {reduce!r}")
    return keras.Sequential(
        [keras.Input(input_shape), keras.layers.Rescaling(1.0 / 255)]
        + [conv_block(filters, pool=False, strides=2, scale=scale, name=f"block{i}")
           for i in range(4)]
        + [keras.layers.Flatten() if reduce == "flatten"
           else keras.layers.GlobalAveragePooling2D()], name=name)


def pixels(input_shape, name="pixels"):
    """Raw pixels as the item vector, as the MANN paper fed them: rescaled to [0, 1], flattened.

    No weights. Takes uint8-range pixels, like `conv4`, so an export holds the rescaling.

    Returns:
      keras.Sequential: [batch, H, W, C] pixels -> [batch, H*W*C] float32.
    """
    return keras.Sequential([keras.Input(input_shape), keras.layers.Rescaling(1.0 / 255),
                             keras.layers.Flatten()], name=name)


def relation_embedding(input_shape, filters=64, name="relation_embedding"):
    """Relation Networks' embedding: 4 conv blocks, max-pool after the first two only.

    As the reference code (floodsung/LearningToCompare_FSL): the first two convolutions are
    unpadded, the last two padded, so 28x28 Omniglot gives 5x5 maps (84x84 gives 19x19).

    Returns:
      keras.Sequential: [batch, H, W, C] pixels -> [batch, h, w, filters] feature maps.
    """
    return keras.Sequential(
        [keras.Input(input_shape), keras.layers.Rescaling(1.0 / 255),
         conv_block(filters, padding="valid", name="block0"),
         conv_block(filters, padding="valid", name="block1"),
         conv_block(filters, pool=False, name="block2"),
         conv_block(filters, pool=False, name="block3")], name=name)


def mlp(input_shape, units=(64, 64), name="mlp"):
    """ReLU MLP for vector inputs: [batch, *input_shape] -> [batch, units[-1]], linear output."""
    layers = [keras.Input(input_shape), keras.layers.Flatten()]
    for i, n in enumerate(units):
        layers.append(keras.layers.Dense(n, activation="relu" if i < len(units) - 1 else None))
    return keras.Sequential(layers, name=name)


def sinusoid_mlp(units=(40, 40), kernel_initializer=None):
    """The MAML paper's sinusoid regressor: 1 -> 40 -> 40 -> 1, ReLU hidden layers.

    Initialised as the reference code (cbfinn/maml `construct_fc_weights`) unless
    `kernel_initializer` is given: weights from a truncated normal with stddev 0.01, zero
    biases. It matters: with Keras's Glorot init a MAML model trained the paper's 70,000
    steps diverged at 5 and 10 test steps on ~1% of tasks (docs/RESULTS.md).
    """
    initializer = kernel_initializer or keras.initializers.TruncatedNormal(stddev=0.01)

    def dense(n, activation=None):
        return keras.layers.Dense(n, activation=activation, kernel_initializer=initializer)
    return keras.Sequential([keras.Input((1,))] + [dense(n, "relu") for n in units]
                            + [dense(1)], name="sinusoid_mlp")


# Image networks by name (a run's `network` setting): input_shape, **kwargs -> an embedding.
NETWORKS = {
    "conv4": conv4,  # Vinyals et al. / Snell et al.: max-pool after each block
    "conv4_strided": strided_conv4,  # Nichol et al. (Reptile): stride 2, flattened
    "conv4_strided_mean": functools.partial(  # Finn et al. (MAML): stride 2, mean over space
        strided_conv4, reduce="mean", scale=False, name="conv4_strided_mean"),
}


def with_exact_batch_norm(model):
    """`model` with every stock keras.layers.BatchNormalization replaced by this module's
    BatchNormalization (exact second derivatives), weights and moving statistics carried over.

    Keras's layer drops a term of the second derivative (its variance stops the gradient
    through the mean): in float64 the MAML meta-gradient of tests/test_fast_weights.py's
    small Conv-BN network is 15% off its central difference, 2e-8 with the exact layer.
    Sequential and functional models, nested ones included, are cloned with
    keras.models.clone_model; a model without the stock layer is returned as it is.

    Raises:
      ValueError: one line, when a stock layer sits where cloning cannot replace it (a
        subclassed model, a custom layer holding it): never silently wrong.
    """
    stock = [layer.name for layer in model._flatten_layers()
             if type(layer) is keras.layers.BatchNormalization]
    if not stock:
        return model

    def exact(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    refusal = (f"the backbone's keras.layers.BatchNormalization {stock} would make MAML's "
               "second-order meta-gradient wrong (Keras drops a second-order term) and cannot "
               "be replaced here")
    try:
        cloned = keras.models.clone_model(model, clone_function=exact, recursive=True)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{refusal} ({type(e).__name__}: cloning needs a Sequential or "
                         "functional model of configurable layers): build it with "
                         "tf_meta.backbones.BatchNormalization, or use first_order=True") from None
    if any(type(layer) is keras.layers.BatchNormalization for layer in cloned._flatten_layers()):
        raise ValueError(f"{refusal}: build it with tf_meta.backbones.BatchNormalization, or "
                         "use first_order=True")
    if model.weights:
        cloned.set_weights(model.get_weights())
    return cloned


def nested_layers(layer):
    """`layer` and every layer nested in it (Sequential, functional and subclassed models)."""
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from nested_layers(inner)


def embedding_for(input_shape, network=None):
    """Default embedding for an input shape: NETWORKS[network] (conv4) for images, mlp for
    vectors.

    Raises:
      ValueError: a network named for vector inputs, or an unknown network.
    """
    if len(input_shape) != 3:
        if network is not None:
            raise ValueError(f"network={network!r} is for images; inputs {tuple(input_shape)} "
                             "get an MLP")
        return mlp(input_shape)
    if (network or "conv4") not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose from {sorted(NETWORKS)}")
    return NETWORKS[network or "conv4"](input_shape)


def classifier_for(input_shape, outputs, network=None):
    """embedding_for(input_shape, network) followed by a linear head: [batch, ...] ->
    [batch, outputs]."""
    embedding = embedding_for(input_shape, network)
    return keras.Sequential([embedding, keras.layers.Dense(outputs, name="head")],
                            name=f"{embedding.name}_classifier")
