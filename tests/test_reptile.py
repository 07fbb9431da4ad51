"""Reptile: the inner Adam loop and the interpolation meta-update, against NumPy."""

import keras
import numpy as np
import tensorflow as tf

from tf_meta import build_learner
from tf_meta.episode import Episode

BETA2, EPS = 0.999, 1e-8


def numpy_adam(w, x, y, steps, lr, v=None, t0=0):
    """Adam with β1 = 0 on mean((x·w − y)²), full batch, from second moment v at step t0.

    Returns (φ, v, step): the weights Reptile should reach and Adam's state after."""
    v = np.zeros_like(w) if v is None else v
    for t in range(t0 + 1, t0 + steps + 1):
        grad = 2 * x.T @ (x @ w - y) / len(x)
        m = grad  # β1 = 0
        v = BETA2 * v + (1 - BETA2) * grad ** 2
        w = w - lr * np.sqrt(1 - BETA2 ** t) * m / (np.sqrt(v) + EPS)
    return w, v, t0 + steps


def numpy_adam_phi(w, x, y, steps, lr):
    return numpy_adam(w, x, y, steps, lr)[0]


def linear_reptile(inner_steps, inner_lr):
    """Reptile on y = x·w (one unit, no bias), full-batch inner steps, MSE."""
    backbone = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    learner = build_learner("reptile", (3,), backbone=backbone, regression=True,
                            inner_lr=inner_lr, inner_steps=inner_steps, inner_batch_size=4)
    learner.backbone.layers[0].kernel.assign([[0.5], [-1.0], [2.0]])
    return learner


def test_meta_update_is_the_interpolation_toward_the_mean_adapted_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)  # 2 tasks, 4 support points each
    y = rng.normal(size=(2, 4, 1)).astype(np.float32)
    episodes = Episode(tf.constant(x), tf.constant(y), tf.constant(x), tf.constant(y))
    learner = linear_reptile(inner_steps=3, inner_lr=0.1)
    epsilon = 0.25
    learner.compile(optimizer=keras.optimizers.SGD(epsilon))
    theta = learner.backbone.layers[0].kernel.numpy()
    # Task 1 continues the inner Adam state task 0 left (the reference code's behaviour).
    phi0, v, t = numpy_adam(theta, x[0], y[0], steps=3, lr=0.1)
    phi1, v, t = numpy_adam(theta, x[1], y[1], steps=3, lr=0.1, v=v, t0=t)
    learner.train_step(episodes)
    expected = theta + epsilon * ((phi0 + phi1) / 2 - theta)  # θ ← θ + ε(mean φ − θ)
    np.testing.assert_allclose(learner.backbone.layers[0].kernel.numpy(), expected, rtol=1e-5)
    assert np.abs(expected - theta).min() > 1e-3  # the update is not trivially zero
    np.testing.assert_allclose(learner.inner_state.v[0].numpy(), v, rtol=1e-5)
    assert float(learner.inner_state.step.numpy()) == t == 6


def test_the_inner_adam_state_carries_over_in_training_and_is_read_only_at_test():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    y = rng.normal(size=(2, 4, 1)).astype(np.float32)
    episodes = Episode(tf.constant(x), tf.constant(y), tf.constant(x), tf.constant(y))
    learner = linear_reptile(inner_steps=2, inner_lr=0.1)
    learner.compile(optimizer=keras.optimizers.SGD(0.5))
    learner.train_step(episodes)
    saved_v = learner.inner_state.v[0].numpy()
    theta = learner.backbone.layers[0].kernel.numpy()
    assert np.abs(saved_v).min() > 0
    # Test-time adaptation starts from the saved state (not a fresh Adam) ...
    learner.test_inner_steps = 3
    phi = learner.adapt(tf.constant(x[0]), tf.constant(y[0]), training=False)[0].numpy()
    expected, _, _ = numpy_adam(theta, x[0], y[0], 3, 0.1, v=saved_v, t0=4)
    np.testing.assert_allclose(phi, expected, rtol=1e-5, atol=1e-5)  # float32 vs float64
    assert np.abs(phi - numpy_adam_phi(theta, x[0], y[0], 3, 0.1)).max() > 1e-4
    # ... and neither evaluation nor prediction changes it.
    learner.test_step(episodes)
    learner.predict_step(episodes)
    np.testing.assert_array_equal(learner.inner_state.v[0].numpy(), saved_v)
    assert float(learner.inner_state.step.numpy()) == 4


def test_adapted_weights_equal_numpy_adam():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 1)).astype(np.float32)
    learner = linear_reptile(inner_steps=5, inner_lr=0.05)
    theta = learner.backbone.layers[0].kernel.numpy()
    phi = learner.adapt(tf.constant(x), tf.constant(y), training=True)[0]
    np.testing.assert_allclose(phi, numpy_adam_phi(theta, x, y, steps=5, lr=0.05), rtol=1e-5)


def test_non_transductive_queries_do_not_see_each_other():
    learner = build_learner("reptile", (28, 28, 1), ways=3, transductive=False,
                            test_inner_steps=2)
    rng = np.random.default_rng(2)
    support = tf.constant(rng.integers(0, 255, (3, 28, 28, 1)), tf.float32)
    queries = rng.integers(0, 255, (4, 28, 28, 1)).astype(np.float32)
    labels = tf.constant([0, 1, 2])

    def logits(q):
        return learner.query_logits(Episode(support, labels, tf.constant(q), None), False)

    changed = queries.copy()
    changed[3] = 255 - changed[3]
    before, after = logits(queries), logits(changed)
    np.testing.assert_allclose(before[:3], after[:3], rtol=1e-5, atol=1e-5)
    assert np.abs(before[3] - after[3]).max() > 1e-4
    learner.transductive = True  # in one batch, BatchNorm statistics couple the queries
    assert np.abs(logits(queries)[:3] - logits(changed)[:3]).max() > 1e-4
