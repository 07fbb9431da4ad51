"""Functional inner loops: fast weights as tensors, run through `keras.Model.stateless_call`.

Fast weights are a list of tensors parallel to `model.trainable_variables`. Nothing is
assigned, so an outer `tf.GradientTape` differentiates through every inner step (exact
second-order MAML), the loops run inside `tf.function` and exported graphs alike, and there
is nothing to restore. (Assigning adapted values to the variables instead silently yields
first-order gradients: assignments are not differentiable.)

Caveats: `stateless_call` needs a built model; the lists must match the variable order 1:1.
To adapt a subset only (ANIL: the head), pass the original variables at the other positions.
"""

from typing import NamedTuple

import tensorflow as tf

from tf_meta.precision import full_precision


class AdamState(NamedTuple):
    """Adam's state: first and second moments (lists parallel to the weights), step count."""

    m: list
    v: list
    step: tf.Tensor


def forward(model, fast, x, training):
    """model(x) with `fast` in place of model.trainable_variables; moving stats unchanged.

    `fast` stays float32 under a mixed precision policy: the layers cast it to their
    compute dtype, so its gradients come back float32 and the inner loop updates float32
    weights; the outputs are cast to float32.

    Returns:
      (outputs float32, updated non-trainable values): the second is what BatchNorm's
      moving statistics would become after this batch; callers may assign or discard it.
    """
    outputs, moving = model.stateless_call(fast, model.non_trainable_variables, x,
                                           training=training)
    return full_precision(outputs), moving


def sgd_adapt(model, loss_fn, x, y, steps, lr, first_order=False, training=True, frozen=()):
    """Fast weights after `steps` SGD steps on loss_fn(y, model(x)), starting from θ.

    Args:
      model: built keras.Model.
      loss_fn: (y, outputs) -> scalar loss.
      x: [S, *input_shape] support inputs; y: [S, ...] support targets.
      steps: python int, inner steps (0 returns θ itself).
      lr: inner learning rate (float or scalar tensor).
      first_order: drop the second-order term (FOMAML): inner gradients are constants
        to the outer tape.
      training: the `training` flag of the forward passes (BatchNorm batch statistics).
      frozen: positions in model.trainable_variables the inner loop leaves at θ (they
        still carry the outer gradient).

    Returns:
      list of tensors parallel to model.trainable_variables.
    """
    fast = [tf.convert_to_tensor(v) for v in model.trainable_variables]  # tape-linked reads of θ
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(fast)  # tensors, not variables: must watch
            outputs, _ = forward(model, fast, x, training)
            loss = loss_fn(y, outputs)
        grads = tape.gradient(loss, fast)
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]  # FOMAML: drop the second-order term
        fast = [w if i in frozen else w - lr * g for i, (w, g) in enumerate(zip(fast, grads))]
    return fast


def adam_adapt(model, loss_fn, x, y, steps, lr, batch_size, seed, state=None, beta1=0.0,
               beta2=0.999, epsilon=1e-8, training=True):
    """Fast weights after `steps` Adam steps on random mini-batches of (x, y), no gradient to θ.

    Reptile's inner loop (supervised-reptile used Adam with beta1 = 0). Each step draws
    `batch_size` examples without replacement from a stateless shuffle of the support set
    (cycling through it, `minibatch_order`), so the loop is a pure function of `seed` and
    `state`. Runs as a tf.while_loop, so 50 test-time steps cost one step's graph.

    Args:
      x: [S, *input_shape]; y: [S, ...].
      steps: python int or scalar tensor.
      batch_size: python int, examples per inner step (capped at S).
      seed: [2] int stateless seed.
      state: AdamState to start from (moments and the step count of the bias correction);
        None starts a fresh Adam (zeros, step 0).

    Returns:
      (fast weights: list of tensors parallel to model.trainable_variables, constants to
      any outer tape; the AdamState after these steps).
    """
    theta = [tf.stop_gradient(tf.convert_to_tensor(v)) for v in model.trainable_variables]
    shapes = [w.shape for w in theta]
    batch = tf.minimum(batch_size, tf.shape(x)[0])
    order = minibatch_order(tf.shape(x)[0], batch, steps, seed)
    if state is None:
        state = AdamState([tf.zeros_like(w) for w in theta], [tf.zeros_like(w) for w in theta],
                          tf.constant(0.0))

    def gradient(t, weights):
        ids = order[t * batch:(t + 1) * batch]
        fast = unflatten(weights, shapes)
        with tf.GradientTape() as tape:
            tape.watch(fast)
            outputs, _ = forward(model, fast, tf.gather(x, ids), training)
            loss = loss_fn(tf.gather(y, ids), outputs)
        return flatten(tape.gradient(loss, fast))

    weights, m, v = adam_steps(gradient, flatten(theta), flatten(state.m), flatten(state.v),
                               state.step, steps, lr, beta1, beta2, epsilon)
    return unflatten(weights, shapes), AdamState(
        unflatten(m, shapes), unflatten(v, shapes), state.step + tf.cast(steps, state.step.dtype))


def minibatch_order(size, batch, steps, seed):
    """Indices into a support set of `size` examples, `batch` per step for `steps` steps
    (step t takes [t * batch, (t + 1) * batch)): one stateless shuffle per pass through
    the set, as many passes as the steps need. [n] int32, n >= steps * batch."""
    epochs = (steps * batch) // size + 1
    seeds = tf.random.experimental.stateless_split(seed, epochs)
    return tf.reshape(tf.map_fn(
        lambda s: tf.random.experimental.stateless_shuffle(tf.range(size), s), seeds,
        fn_output_signature=tf.int32), [-1])


def adam_steps(gradient, weights, m, v, step, steps, lr, beta1, beta2, epsilon):
    """`steps` Adam updates of flattened weights, as a tf.while_loop.

    Adam runs on one flat vector of all weights: a handful of ops per step instead of a
    handful per weight tensor (these small steps are dominated by per-op overhead). Every
    operation is elementwise, so `weights` may also be [T, P], one row per task
    (`task_batch.adam_adapt`).

    Args:
      gradient: (t, weights) -> the loss's gradient at step t (0-based), weights' shape.
      weights, m, v: [P] or [T, P] float, the weights and Adam's moments.
      step: scalar float, Adam's step count before these steps (its bias correction).

    Returns:
      (weights, m, v) after the steps.
    """
    def update(t, weights, m, v):
        grads = gradient(t, weights)
        m = beta1 * m + (1 - beta1) * grads
        v = beta2 * v + (1 - beta2) * tf.square(grads)
        t1 = step + tf.cast(t + 1, step.dtype)  # the bias correction's step count
        scale = tf.cast(lr * tf.sqrt(1 - beta2 ** t1) / (1 - beta1 ** t1), weights.dtype)
        return t + 1, weights - scale * m / (tf.sqrt(v) + epsilon), m, v

    _, weights, m, v = tf.while_loop(lambda t, *_: t < steps, update,
                                     (tf.constant(0), weights, m, v))
    return weights, m, v


def flatten(tensors, tasks=False):
    """Tensors -> one vector [P]; with `tasks`, [T, *shape] tensors -> [T, P]."""
    if tasks:
        return tf.concat([tf.reshape(t, [tf.shape(t)[0], -1]) for t in tensors], axis=1)
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(vector, shapes, tasks=False):
    """The inverse of `flatten`: [P] (with `tasks`, [T, P]) -> tensors of `shapes` (each
    [T, *shape] with `tasks`)."""
    parts = tf.split(vector, [s.num_elements() for s in shapes], axis=1 if tasks else 0)
    if tasks:
        return [tf.reshape(p, [tf.shape(vector)[0], *s]) for p, s in zip(parts, shapes)]
    return [tf.reshape(p, s) for p, s in zip(parts, shapes)]
