"""The sinusoid family (MAML §5.1) and MAML regression on it."""

import keras
import numpy as np

from tf_meta import backbones, build_learner, data
from tf_meta.evaluation import evaluate_episodes


def test_tasks_are_sinusoids_in_the_paper_ranges():
    ds = data.make_sinusoid_dataset(shots=10, query_shots=20, meta_batch_size=50, seed=0)
    episodes = next(iter(ds))
    assert episodes.support_x.shape == (50, 10, 1) and episodes.query_y.shape == (50, 20, 1)
    for b in range(50):
        x = np.concatenate([episodes.support_x[b], episodes.query_x[b]])[:, 0]
        y = np.concatenate([episodes.support_y[b], episodes.query_y[b]])[:, 0]
        assert np.all(np.abs(x) <= 5)
        # y = A sin(x − φ) = a sin x + b cos x with A = |(a, b)|, one function per task.
        (a, c), *_ = np.linalg.lstsq(np.stack([np.sin(x), np.cos(x)], 1), y, rcond=None)
        np.testing.assert_allclose(a * np.sin(x) + c * np.cos(x), y, atol=1e-4)
        assert 0.1 - 1e-4 <= np.hypot(a, c) <= 5 + 1e-4
        assert -np.pi - 1e-4 <= np.arctan2(c, a) <= 1e-4  # φ in [0, π]: b = −A sin φ ≤ 0


def test_same_seed_same_tasks():
    a = next(iter(data.make_sinusoid_dataset(5, 5, 4, seed=3)))
    b = next(iter(data.make_sinusoid_dataset(5, 5, 4, seed=3)))
    assert all(np.array_equal(s, t) for s, t in zip(a, b))


def test_maml_regression_learns_to_adapt():
    # Glorot init: the reference init (weights ~0.01) sits near zero output for the first
    # thousands of steps, and this test has 800.
    backbone = backbones.sinusoid_mlp(kernel_initializer="glorot_uniform")
    learner = build_learner("maml", (1,), ways=1, backbone=backbone,
                            regression=True, inner_lr=0.01, inner_steps=1, test_inner_steps=5)
    assert learner.metrics == [learner.loss_tracker]  # MSE only: no accuracy for regression
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))
    test = data.make_sinusoid_dataset(5, 50, 50, seed=1, num_episodes=100)
    before = evaluate_episodes(learner, test, verbose=0)["mse"]
    learner.fit(data.make_sinusoid_dataset(10, 10, 25, seed=0), steps_per_epoch=800, epochs=1,
                verbose=0)
    after = evaluate_episodes(learner, test, verbose=0)
    assert set(after) == {"mse", "ci95", "episodes"}
    assert after["mse"] < 0.6 * before, (before, after)


def test_the_sinusoid_regressor_is_initialised_as_the_reference_code():
    model = backbones.sinusoid_mlp()
    assert [layer.units for layer in model.layers] == [40, 40, 1]
    for layer in model.layers:
        kernel = layer.kernel.numpy()
        assert np.abs(kernel).max() <= 0.02 + 1e-6  # truncated normal, stddev 0.01, at 2σ
        assert 0.005 < kernel.std() < 0.015 or kernel.size < 50
        assert not layer.bias.numpy().any()
