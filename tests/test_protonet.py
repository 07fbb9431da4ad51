"""Prototypical Networks: logits against NumPy, training on a fixed batch, real Omniglot."""

import keras
import numpy as np
import tensorflow as tf

from conftest import fixed_batch_losses
from tf_meta import build_learner, data
from tf_meta.algorithms.protonet import class_means, squared_euclidean
from tf_meta.episode import Episode
from tf_meta.evaluation import evaluate_episodes


def numpy_logits(embed, episode):
    """-||q - mean_k||² from the definition, one episode at a time."""
    support, query = embed(episode.support_x), embed(episode.query_x)
    labels = np.asarray(episode.support_y)
    ways = labels.max() + 1
    prototypes = np.stack([support[labels == k].mean(axis=0) for k in range(ways)])
    return -((query[:, None, :] - prototypes[None]) ** 2).sum(axis=-1)


def test_logits_equal_numpy_negative_squared_distances_with_unequal_shots():
    learner = build_learner("protonet", (8,))
    rng = np.random.default_rng(1)
    support_y = np.array([0, 1, 2, 2, 1, 2, 0, 3], np.int32)  # 2, 2, 3 and 1 shots
    episode = Episode(rng.normal(size=(8, 8)).astype(np.float32), support_y,
                      rng.normal(size=(6, 8)).astype(np.float32), np.zeros(6, np.int32))
    logits = learner.query_logits(Episode(*map(tf.constant, episode)), training=False)
    embed = lambda x: learner(tf.constant(x), training=False).numpy()  # noqa: E731
    assert logits.shape == (6, 4)
    np.testing.assert_allclose(logits, numpy_logits(embed, episode), rtol=1e-5, atol=1e-4)


def test_helpers_on_a_hand_example():
    support_emb = tf.constant([[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]]])
    prototypes = class_means(support_emb, tf.constant([[0, 0, 1]]), 2)
    np.testing.assert_allclose(prototypes, [[[1.0, 0.0], [0.0, 4.0]]])
    distances = squared_euclidean(tf.constant([[[1.0, 1.0]]]), prototypes)
    np.testing.assert_allclose(distances, [[[1.0, 10.0]]])


def test_batched_logits_equal_per_episode_logits():
    source = data.synthetic(20, 10, (8,))
    episodes = next(iter(data.make_episode_dataset(source, 4, 2, 3, 3, seed=0)))
    learner = build_learner("protonet", (8,))
    batched = learner.batch_logits(episodes, training=False)
    assert batched.shape == (3, 12, 4)
    for b in range(3):
        single = learner.query_logits(Episode(*(t[b] for t in episodes)), training=False)
        np.testing.assert_allclose(batched[b], single, rtol=1e-5, atol=1e-5)


def test_loss_on_a_fixed_meta_batch_decreases_step_after_step():
    source = data.synthetic(20, 10, (16, 16, 1), noise=1.0)
    episodes = next(iter(data.make_episode_dataset(source, 5, 1, 3, 2, seed=0)))
    learner = build_learner("protonet", source.input_shape)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))

    losses = fixed_batch_losses(learner, episodes, 6)
    assert all(np.isfinite(losses))
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_fit_one_step_reports_finite_loss_and_accuracy():
    source = data.synthetic(20, 10, (8,))
    learner = build_learner("protonet", (8,))
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = learner.fit(data.make_episode_dataset(source, 3, 2, 2, 2, seed=0),
                          steps_per_epoch=1, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert 0.0 <= history.history["accuracy"][0] <= 1.0


def test_short_training_on_real_omniglot_beats_chance_by_far(omniglot_splits):
    learner = build_learner("protonet", (28, 28, 1))
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))
    train = data.make_episode_dataset(omniglot_splits["train"], 20, 1, 5, 1, seed=0)
    test = data.make_episode_dataset(omniglot_splits["test"], 5, 1, 5, 50, seed=1,
                                     num_episodes=100)
    before = evaluate_episodes(learner, test, verbose=0)["accuracy"]
    learner.fit(train, steps_per_epoch=150, epochs=1, verbose=0)
    after = evaluate_episodes(learner, test, verbose=0)
    assert after["episodes"] == 100
    # Chance is 0.2; random Conv-4 features already beat it, so training must add to them.
    assert after["accuracy"] > 0.6 and after["accuracy"] > before + 0.1, (before, after)
