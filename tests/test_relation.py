"""Relation Networks: the paper's architecture, scores, class maps, loss, clipping, BatchNorm."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import fixed_batch_losses
from tf_meta import build_learner, data, protocols
from tf_meta.algorithms import RelationNet, relation
from tf_meta.algorithms.relation import class_features
from tf_meta.episode import Episode


def omniglot_like_episode(ways=5, shots=1, query_shots=3, seed=0):
    source = data.synthetic(12, 10, (28, 28, 1))
    stream = data.make_episode_dataset(source, ways, shots, query_shots, 1, seed=seed)
    return next(iter(stream))


@pytest.fixture(scope="module")
def learner():
    keras.utils.set_random_seed(0)
    return build_learner("relationnet", (28, 28, 1))


def test_the_embedding_keeps_spatial_maps_and_the_relation_module_sees_pairs(learner):
    assert learner.backbone.output_shape == (None, 5, 5, 64)  # pool after blocks 1-2 only
    assert learner.relation.pair_layer.kernel.shape == (3, 3, 128, 64)  # [class, query] maps
    assert learner.relation.body.output_shape == (None, 1)
    assert learner.relation.body.layers[-1].activation is keras.activations.sigmoid


@pytest.mark.parametrize("ways,shots", [(5, 1), (3, 2)])
def test_relation_scores_lie_in_0_1_with_one_row_per_query(learner, ways, shots):
    episodes = omniglot_like_episode(ways, shots, query_shots=3)
    for training in (True, False):
        scores = learner.query_logits(Episode(*(t[0] for t in episodes)), training).numpy()
        assert scores.shape == (3 * ways, ways)  # [Q, N]
        assert np.all((scores >= 0) & (scores <= 1))


def test_a_class_feature_map_is_the_sum_of_its_support_maps():
    rng = np.random.default_rng(0)
    support = rng.normal(size=(2, 6, 4, 4, 3)).astype(np.float32)  # [B, S, h, w, c]
    labels = np.array([[0, 1, 2, 0, 1, 2], [2, 2, 1, 0, 0, 1]])
    maps = class_features(tf.constant(support), tf.constant(labels), 3).numpy()
    assert maps.shape == (2, 3, 4, 4, 3)
    for b in range(2):
        for n in range(3):
            np.testing.assert_allclose(maps[b, n], support[b][labels[b] == n].sum(axis=0),
                                       rtol=1e-6)


def concatenated_pairs(class_feats, query_feats):
    """The paper's pairs, written out: [B, N, *F], [B, Q, *F] -> [B*Q*N, *F[:-1], 2c]."""
    b, n, q = class_feats.shape[0], class_feats.shape[1], query_feats.shape[1]
    shape = (b, q, n, *class_feats.shape[2:])
    pairs = np.concatenate([np.broadcast_to(class_feats[:, None], shape),
                            np.broadcast_to(query_feats[:, :, None], shape)], axis=-1)
    return pairs.reshape(b * q * n, *pairs.shape[3:])


@pytest.mark.parametrize("feature_shape", [(5, 5, 64), (16,)])
@pytest.mark.parametrize("training", [True, False])
def test_the_relation_module_scores_the_concatenated_pairs(feature_shape, training):
    keras.utils.set_random_seed(3)
    module = relation.RelationModule(feature_shape)
    rng = np.random.default_rng(0)
    classes = rng.normal(size=(2, 3, *feature_shape)).astype(np.float32)
    queries = rng.normal(size=(2, 4, *feature_shape)).astype(np.float32)
    # The paper's g, literally: the full first layer on each concatenated pair, then the rest.
    pairs = concatenated_pairs(classes, queries)
    expected = module.body(module.pair_layer(pairs), training=training).numpy().reshape(2, 4, 3)
    actual = module(classes, queries, training=training).numpy()
    assert actual.shape == (2, 4, 3)  # [B, Q, N]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_loss_is_mse_against_one_hot_labels(learner):
    scores = tf.constant([[0.9, 0.2], [0.4, 0.5]])
    expected = np.mean(np.square([[0.9 - 1, 0.2], [0.4, 0.5 - 1]]))
    np.testing.assert_allclose(learner.query_loss(tf.constant([0, 1]), scores), expected,
                               rtol=1e-6)


def test_loss_on_a_fixed_omniglot_shaped_episode_decreases():
    keras.utils.set_random_seed(1)
    learner = build_learner("relationnet", (28, 28, 1))
    learner.compile(optimizer=learner.meta_optimizer(1e-3, 10, 100000, 0.5))
    episodes = omniglot_like_episode(5, 1, query_shots=4, seed=3)

    losses = fixed_batch_losses(learner, episodes, 6)
    assert losses[-1] < 0.8 * losses[0], losses


def test_each_module_gradient_is_clipped_to_global_norm_0_5():
    keras.utils.set_random_seed(2)
    learner = build_learner("relationnet", (28, 28, 1), clip_norm=1e-3)  # clipping certainly bites
    grads = learner.finish_gradients(learner.meta_gradients(omniglot_like_episode())[0])
    relation = {id(v) for v in learner.relation.trainable_variables}
    for in_relation in (False, True):
        group = [g for g, v in zip(grads, learner.trainable_variables)
                 if (id(v) in relation) == in_relation]
        np.testing.assert_allclose(tf.linalg.global_norm(group), 1e-3, rtol=1e-4)
    clip = {h.name: h.default for h in RelationNet.HYPERPARAMETERS}["clip_norm"]
    assert clip == 0.5  # the reference code's clip value


def test_transductive_test_uses_batch_statistics_and_leaves_moving_ones_alone(learner):
    episode = Episode(*(t[0] for t in omniglot_like_episode(query_shots=4)))
    moving = [v.numpy().copy() for v in learner.non_trainable_variables]
    full = learner.query_logits(episode, training=False).numpy()
    half = learner.query_logits(episode._replace(query_x=episode.query_x[:10]), False).numpy()
    assert not np.allclose(full[:10], half, atol=1e-5)  # queries share batch statistics
    for before, after in zip(moving, learner.non_trainable_variables):
        np.testing.assert_array_equal(before, after.numpy())


def test_non_transductive_test_scores_each_query_alone():
    keras.utils.set_random_seed(0)
    learner = build_learner("relationnet", (28, 28, 1), transductive=False)
    episode = Episode(*(t[0] for t in omniglot_like_episode(query_shots=4)))
    full = learner.query_logits(episode, training=False).numpy()
    half = learner.query_logits(episode._replace(query_x=episode.query_x[:10]), False).numpy()
    np.testing.assert_allclose(full[:10], half, rtol=1e-5, atol=1e-6)


def test_protocol_follows_the_reference_queries_per_class():
    assert protocols.protocol("paper", "relationnet", "omniglot")["train_query_shots"] == 19
    assert protocols.protocol("paper", "relationnet", "omniglot", 20, 1)["train_query_shots"] == 10
    assert protocols.protocol("paper", "relationnet", "omniglot", 20, 5)["train_query_shots"] == 5
    assert protocols.protocol("paper", "relationnet", "omniglot", 5, 5)["train_query_shots"] == 15
    assert protocols.protocol("paper", "relationnet", "omniglot")["lr_decay_every"] == 100000


def test_probabilities_are_the_relation_scores_normalised_per_query(learner):
    """Scores are sigmoids, not logits: their softmax would be near-flat (<= e between two)."""
    scores = tf.constant([[0.9, 0.05, 0.05], [0.2, 0.2, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(learner.probabilities(scores),
                               [[0.9, 0.05, 0.05], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]],
                               atol=1e-6)
    assert float(tf.nn.softmax(scores)[0, 0]) < 0.54  # what a softmax would have said


def test_the_reference_initialisation_is_selectable():
    """LearningToCompare_FSL weights_init: conv N(0, sqrt(2/n)), n = 3*3*out; dense N(0, 0.01),
    dense bias 1."""
    keras.utils.set_random_seed(0)
    learner = build_learner("relationnet", (28, 28, 1), reference_init=True)
    conv = learner.backbone.layers[2].layers[0]  # block1's convolution, 3x3x64x64
    assert np.std(conv.kernel.numpy()) == pytest.approx(np.sqrt(2 / (9 * 64)), rel=0.05)
    assert not conv.bias.numpy().any()
    dense = [layer for layer in learner.relation.body.layers
             if isinstance(layer, keras.layers.Dense)]
    assert all((layer.bias.numpy() == 1).all() for layer in dense)
    assert np.std(dense[0].kernel.numpy()) == pytest.approx(0.01, rel=0.1)
    glorot = build_learner("relationnet", (28, 28, 1))
    assert not glorot.relation.body.layers[-1].bias.numpy().any()
