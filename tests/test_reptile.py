"""Reptile: the inner Adam loop and the interpolation meta-update, against NumPy."""

import keras
import numpy as np
import tensorflow as tf

from tf_meta import build_learner
from tf_meta.episode import Episode

BETA2, EPS = 0.999, 1e-8


def numpy_adam_phi(w, x, y, steps, lr):
    """Adam with β1 = 0 on mean((x·w − y)²), full batch: the φ Reptile should reach."""
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, steps + 1):
        grad = 2 * x.T @ (x @ w - y) / len(x)
        m = grad  # β1 = 0
        v = BETA2 * v + (1 - BETA2) * grad ** 2
        w = w - lr * np.sqrt(1 - BETA2 ** t) * m / (np.sqrt(v) + EPS)
    return w


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
    phis = [numpy_adam_phi(theta, x[k], y[k], steps=3, lr=0.1) for k in range(2)]
    learner.train_step(episodes)
    expected = theta + epsilon * (np.mean(phis, axis=0) - theta)  # θ ← θ + ε(mean φ − θ)
    np.testing.assert_allclose(learner.backbone.layers[0].kernel.numpy(), expected, rtol=1e-5)
    assert np.abs(expected - theta).min() > 1e-3  # the update is not trivially zero


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
