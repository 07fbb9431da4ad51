"""A meta-batch's tasks as one computation: per-task fast weights, tasks stacked on channels.

MAML's training and test-time SGD (`sgd_adapt`) and Reptile's test-time Adam (`adam_adapt`)
run here when the learner batches its tasks (`FastWeightLearner.batches_tasks`).

`fast_weights` runs one task through `keras.Model.stateless_call`; here T tasks run at
once through a translation of the backbone's layers, each task with its own weights:

  images     [T, S, H, W, C] -> stacked [S, H, W, T*C] (task t owns channels t*C..t*C+C-1)
  Conv2D     a grouped convolution, one filter group per task: kernels [T, kh, kw, Cin, F]
             -> filter [kh, kw, Cin, T*F], biases [T, F] -> [T*F]
  BatchNorm  batch statistics per channel of [S, h, w, T*F]: per task, per feature
  Rescaling, ReLU, MaxPooling2D   elementwise or per channel: unchanged on the stack
  Flatten, GlobalAveragePooling2D   stacked [S, h, w, T*F] -> per task [T, S, D]
  Dense      on per-task features [T, S, D]: einsum with kernels [T, D, O], biases [T, O]

Vector inputs [T, S, D] start per task (an MLP: Flatten, Dense). Every task of a meta-batch
has the same support and query sizes, so they stack. The tasks are independent, so the sum
of their losses has each task's gradient at its own fast weights: one tape serves all T,
and an outer tape differentiates through it (exact second order, as `fast_weights`).

What is translated is a Sequential backbone (nested Sequentials too) of the layer types
above, channels_last, with elementwise activations, BatchNorm only with batch statistics
(`training=True`); `unsupported(model)` names what is not, and the caller runs its loop
for it. Mixed precision as `fast_weights.forward`: fast weights stay float32, each layer
computes in its compute dtype, BatchNorm's statistics in float32, the outputs come back
float32.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tf_meta import backbones
from tf_meta.algorithms import fast_weights
from tf_meta.precision import full_precision

_ELEMENTWISE = (keras.activations.linear, keras.activations.relu)
_STATELESS = (keras.layers.ReLU, keras.layers.MaxPooling2D)


def leaves(model):
    """The layers a Sequential backbone (nested Sequentials included) calls, in order."""
    for layer in model.layers:
        if isinstance(layer, keras.Sequential):
            yield from leaves(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


def unsupported(model):
    """None when `model` translates; else why not, one line (the caller keeps its loop)."""
    if not isinstance(model, keras.Sequential):
        return f"{type(model).__name__} {model.name!r} is not a keras.Sequential"
    stacked = len(model.input_shape) == 4  # images stack on channels; vectors start per task
    for layer in leaves(model):
        reason = _unsupported_layer(layer)
        if not reason and (not layer.trainable or len(layer.trainable_variables) != len(
                layer.weights) and not isinstance(layer, keras.layers.BatchNormalization)):
            reason = "frozen weights"
        if not reason and stacked == isinstance(layer, keras.layers.Dense):
            reason = "on feature maps" if stacked else "after the features were flattened"
        if reason:
            return f"layer {layer.name!r} ({type(layer).__name__}): {reason}"
        stacked = stacked and not isinstance(
            layer, (keras.layers.Flatten, keras.layers.GlobalAveragePooling2D))
    return None


def _unsupported_layer(layer):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first"
    if isinstance(layer, keras.layers.Conv2D):
        if type(layer) is not keras.layers.Conv2D or layer.groups != 1 or tuple(
                layer.dilation_rate) != (1, 1):
            return "only plain Conv2D (no groups, no dilation)"
        return None if layer.activation in _ELEMENTWISE else "activation not elementwise"
    if isinstance(layer, keras.layers.Dense):
        return None if layer.activation in _ELEMENTWISE else "activation not elementwise"
    if isinstance(layer, keras.layers.BatchNormalization):
        if type(layer) is not backbones.BatchNormalization or layer.axis not in (-1, 3) or (
                layer.renorm):
            return "only tf_meta.backbones.BatchNormalization over the last axis"
        return None
    if isinstance(layer, keras.layers.Rescaling):
        scalar = np.size(layer.scale) == 1 and np.size(layer.offset) == 1
        return None if scalar else "per-channel scale or offset"
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return "keepdims" if layer.keepdims else None
    if isinstance(layer, (keras.layers.Flatten, *_STATELESS)):
        return None
    return "no batched translation"


def first_convolution_values(model):
    """Values the first Conv2D writes per image (h * w * filters); 0 without one."""
    for layer in leaves(model):
        if isinstance(layer, keras.layers.Conv2D):
            return math.prod(layer.output.shape[1:])
    return 0


def tile(variables, tasks):
    """θ as every task's starting fast weights: list of [T, *shape] (gradients sum over T)."""
    return [tf.repeat(tf.convert_to_tensor(v)[None], tasks, axis=0) for v in variables]


def forward(model, fast, x):
    """model(x) of each task with its own weights: batch statistics in BatchNorm.

    Args:
      model: a built backbone that `unsupported` accepts.
      fast: list parallel to model.trainable_variables, each [T, *variable shape].
      x: [T, N, H, W, C] images or [T, N, D] vectors.

    Returns:
      [T, N, *output shape] float32.
    """
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    tasks = tf.shape(x)[0]
    stacked = len(x.shape) == 5
    if stacked:  # [T, N, H, W, C] -> [N, H, W, T*C]
        if x.dtype.is_integer:  # oneDNN transposes uint8 only with AVX-512 (and logs it)
            # float32 before the transpose; grappler moves a lone Cast after it.
            x = tf.ensure_shape(tf.cast(x, tf.float32), x.shape)
        shape = tf.shape(x)
        x = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]),
                       [shape[1], shape[2], shape[3], shape[0] * shape[4]])
    for layer in leaves(model):
        weights = [fast[position[id(v)]] for v in layer.trainable_variables]
        x, stacked = _call(layer, weights, x, stacked, tasks)
    return full_precision(x)


def _call(layer, weights, x, stacked, tasks):
    """One layer on stacked [N, H, W, T*C] or per-task [T, N, D] inputs: (output, stacked)."""
    dtype = layer.compute_dtype
    if isinstance(layer, keras.layers.Conv2D):
        x = _grouped_conv(tf.cast(x, dtype), tf.cast(weights[0], dtype), layer.strides,
                          layer.padding.upper())
        if layer.use_bias:
            x = x + tf.reshape(tf.cast(weights[1], dtype), [-1])
        return layer.activation(x), True
    if isinstance(layer, keras.layers.Dense):
        x = tf.einsum("tnd,tdo->tno", tf.cast(x, dtype), tf.cast(weights[0], dtype))
        if layer.use_bias:
            x = x + tf.cast(weights[1], dtype)[:, None]
        return layer.activation(x), False
    if isinstance(layer, keras.layers.BatchNormalization):
        return tf.cast(_batch_norm(layer, weights, x), dtype), True
    if isinstance(layer, keras.layers.Flatten):
        return _per_task(x, tasks) if stacked else tf.reshape(x, [tasks, tf.shape(x)[1], -1]), \
            False
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return _per_task(tf.reduce_mean(x, axis=[1, 2], keepdims=True), tasks), False
    return layer(x), stacked  # Rescaling, ReLU, MaxPooling2D: the same on the stack


def _grouped_conv(x, kernel, strides, padding):
    """Each task's convolution: stacked [N, H, W, T*C], kernels [T, kh, kw, C, F] ->
    stacked [N, h, w, T*F].

    One grouped convolution in float32 and bfloat16. TensorFlow's CPU kernels have no
    gradient of a grouped convolution in float16 or float64 ("not supported on CPU"): there
    a depthwise convolution (each of the T*C channels with its F filters) summed over C, the
    same sums in another order, slower, and differentiable twice.
    """
    k = tf.shape(kernel)
    if x.dtype in (tf.float32, tf.bfloat16):
        grouped = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]),
                             [k[1], k[2], k[3], k[0] * k[4]])
        return tf.nn.conv2d(x, grouped, strides, padding)
    depthwise = tf.reshape(tf.transpose(kernel, [1, 2, 0, 3, 4]), [k[1], k[2], -1, k[4]])
    y = tf.nn.depthwise_conv2d(x, depthwise, [1, *strides, 1], padding)
    s = tf.shape(y)
    y = tf.reduce_sum(tf.reshape(y, [s[0], s[1], s[2], k[0], k[3], k[4]]), axis=4)
    return tf.reshape(y, [s[0], s[1], s[2], k[0] * k[4]])


def _per_task(x, tasks):
    """Stacked maps [N, h, w, T*F] -> per-task flattened [T, N, h*w*F] (Keras's order)."""
    s = tf.shape(x)
    x = tf.reshape(x, [s[0], s[1], s[2], tasks, s[3] // tasks])
    return tf.reshape(tf.transpose(x, [3, 0, 1, 2, 4]), [tasks, s[0], -1])


def _batch_norm(layer, weights, x):
    """Batch-statistic BatchNorm of stacked [N, h, w, T*F], statistics in float32 (float64
    in checks).

    Per-task offsets and scales [T, F] are the stack's [T*F]. In graphs, the fused kernel
    on the maps as they are, float32 or bfloat16 with float32 scale and offset, as
    `backbones.BatchNormalization` runs them (its second derivatives are exact), whether
    or not the layer has a scale (a constant one stands in); else explicit moments in
    float32 or float64, both differentiated through.
    """
    params = {id(v): w for v, w in zip(layer.trainable_variables, weights)}
    fused = x.dtype in (tf.float32, tf.bfloat16) and not tf.executing_eagerly()
    if not fused:
        x = full_precision(x)
    channels = tf.shape(x)[-1:]
    dtype = tf.float32 if fused else x.dtype
    gamma = (tf.cast(tf.reshape(params[id(layer.gamma)], [-1]), dtype) if layer.scale
             else tf.ones(channels, dtype))
    beta = (tf.cast(tf.reshape(params[id(layer.beta)], [-1]), dtype) if layer.center
            else tf.zeros(channels, dtype))
    if fused:
        return tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=layer.epsilon,
                                                is_training=True)[0]
    mean = tf.reduce_mean(x, axis=[0, 1, 2], keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axis=[0, 1, 2], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + layer.epsilon) * gamma + beta


def sgd_adapt(model, loss_fn, x, y, steps, lr, first_order=False, frozen=()):
    """Every task's fast weights after `steps` SGD steps, as `fast_weights.sgd_adapt`.

    Args:
      loss_fn: (y [T, S, ...], outputs [T, S, ...]) -> per-task losses [T].
      x: [T, S, *input_shape]; y: [T, S, ...].
      frozen: positions in model.trainable_variables left at θ.

    Returns:
      list parallel to model.trainable_variables, each [T, *variable shape].
    """
    fast = tile(model.trainable_variables, tf.shape(x)[0])
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(fast)
            loss = tf.reduce_sum(loss_fn(y, forward(model, fast, x)))
        grads = tape.gradient(loss, fast)
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        fast = [w if i in frozen else w - lr * g for i, (w, g) in enumerate(zip(fast, grads))]
    return fast


def adam_adapt(model, loss_fn, x, y, steps, lr, batch_size, seeds, state, beta1=0.0,
               beta2=0.999, epsilon=1e-8):
    """Every task's fast weights after `steps` Adam steps, as `fast_weights.adam_adapt`.

    Each task starts from θ and the same Adam `state` (Reptile at test: every task from the
    saved state), and draws its mini-batches as `fast_weights.adam_adapt` does with its
    own seed, so task t's weights are those the single-task loop gives it.

    Args:
      loss_fn: (y [T, b, ...], outputs [T, b, ...]) -> per-task losses [T].
      x: [T, S, *input_shape]; y: [T, S, ...].
      batch_size: python int, examples per inner step (capped at S).
      seeds: [T, 2] int, the tasks' stateless seeds.
      state: fast_weights.AdamState shared by every task (moments shaped as the weights).

    Returns:
      list parallel to model.trainable_variables, each [T, *variable shape], constants to
      any outer tape (the tasks' Adam states are dropped: each test task's ends with it).
    """
    tasks, size = tf.shape(x)[0], tf.shape(x)[1]
    shapes = [v.shape for v in model.trainable_variables]
    batch = tf.minimum(batch_size, size)
    order = tf.map_fn(lambda seed: fast_weights.minibatch_order(size, batch, steps, seed),
                      seeds, fn_output_signature=tf.int32)  # [T, n]

    def gradient(t, weights):
        ids = order[:, t * batch:(t + 1) * batch]
        fast = fast_weights.unflatten(weights, shapes, tasks=True)
        with tf.GradientTape() as tape:
            tape.watch(fast)
            outputs = forward(model, fast, tf.gather(x, ids, batch_dims=1))
            loss = tf.reduce_sum(loss_fn(tf.gather(y, ids, batch_dims=1), outputs))
        return fast_weights.flatten(tape.gradient(loss, fast), tasks=True)

    def per_task(tensors):
        return tf.repeat(fast_weights.flatten(tensors)[None], tasks, axis=0)

    weights, _, _ = fast_weights.adam_steps(
        gradient, per_task([tf.stop_gradient(tf.convert_to_tensor(v))
                            for v in model.trainable_variables]),
        per_task(state.m), per_task(state.v), state.step, steps, lr, beta1, beta2, epsilon)
    return fast_weights.unflatten(weights, shapes, tasks=True)
