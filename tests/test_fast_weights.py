"""Exact MAML meta-gradients through the functional inner loop (fast_weights + MAML)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_meta import backbones, build_learner, data
from tf_meta.algorithms import MAML, fast_weights
from tf_meta.episode import Episode


def analytic_outer_gradient(first_order):
    """torchmeta's hand-derived case, in Keras.

    One linear unit without bias, θ = [2, 3, 5]; loss(out) = 0.5·out²; inner lr α = 0.5.
    Support x_s = [1, 2, 3], query x_q = [4, 5, 6].
      inner: out_s = θ·x_s = 23, ∇ = 23·x_s = [23, 46, 69], θ' = θ - α∇ = [-9.5, -20, -29.5]
      outer: out_q = θ'·x_q = -315, L = 0.5·315² = 49612.5
      dL/dθ = (I - α x_s x_sᵀ) · out_q·x_q = [3780, 8505, 13230]   (second order)
      first order drops the Jacobian (I - α x_s x_sᵀ): out_q·x_q = [-1260, -1575, -1890]
    """
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign([[2.0], [3.0], [5.0]])
    loss_fn = lambda y, out: tf.reduce_sum(0.5 * tf.square(out))  # noqa: E731
    with tf.GradientTape() as tape:
        fast = fast_weights.sgd_adapt(model, loss_fn, tf.constant([[1.0, 2.0, 3.0]]), None,
                                      steps=1, lr=0.5, first_order=first_order)
        out, _ = fast_weights.forward(model, fast, tf.constant([[4.0, 5.0, 6.0]]), True)
        loss = loss_fn(None, out)
    assert float(loss) == 49612.5
    return tape.gradient(loss, model.trainable_variables)[0].numpy().ravel()


def test_second_order_gradient_matches_the_hand_derivation():
    np.testing.assert_allclose(analytic_outer_gradient(False), [3780, 8505, 13230])


def test_first_order_gradient_is_the_plain_gradient_at_the_adapted_weights():
    np.testing.assert_allclose(analytic_outer_gradient(True), [-1260, -1575, -1890])


@pytest.fixture
def float64():
    """Layers built inside the test compute in float64 (both switches: floatx and policy)."""
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")


def small_conv_bn_maml(norm_layer, first_order=False, **norm_settings):
    backbone = keras.Sequential([
        keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, padding="same"),
        norm_layer(**norm_settings),
        keras.layers.ReLU(), keras.layers.Conv2D(2, 3, strides=2), keras.layers.Flatten(),
        keras.layers.Dense(3)])
    learner = MAML(backbone, inner_lr=0.3, inner_steps=2, first_order=first_order)
    learner.build((None, 6, 6, 1))
    return learner


def fixed_episode(dtype, size=6):
    rng = np.random.default_rng(0)
    return Episode(tf.constant(rng.normal(size=(6, size, size, 1)) * 50 + 128, dtype),
                   tf.constant([0, 1, 2, 0, 1, 2]),
                   tf.constant(rng.normal(size=(9, size, size, 1)) * 50 + 128, dtype),
                   tf.constant([0, 1, 2] * 3))


def meta_loss(learner, episode):
    logits = learner.query_logits(episode, training=True)
    return learner.query_loss(episode.query_y, logits)


def directional_derivatives(learner, episode, eps=1e-5, loss_fn=meta_loss):
    """(d/dt L(θ + t·d) by the tape, by central differences) along a random direction d;
    L = loss_fn(learner, episode), `meta_loss` unless given."""
    variables = learner.trainable_variables
    rng = np.random.default_rng(1)
    direction = [rng.normal(size=v.shape) for v in variables]
    with tf.GradientTape() as tape:
        loss = loss_fn(learner, episode)
    grads = tape.gradient(loss, variables)
    analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))
    theta = [v.numpy() for v in variables]

    def loss_at(t):
        for v, w, d in zip(variables, theta, direction):
            v.assign(w + t * d)
        return float(loss_fn(learner, episode))

    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    loss_at(0.0)
    return analytic, numeric


def test_meta_gradient_through_conv_and_batchnorm_matches_finite_differences(float64):
    keras.utils.set_random_seed(3)
    learner = small_conv_bn_maml(backbones.BatchNormalization)
    analytic, numeric = directional_derivatives(learner, fixed_episode(tf.float64))
    assert abs(analytic - numeric) < 1e-6 * abs(numeric), (analytic, numeric)


def test_the_finite_difference_check_catches_stock_keras_batchnorm(float64, monkeypatch):
    """Keras's own BatchNormalization stops the gradient through the mean in its variance:
    kept (the replacement below switched off), the check sees the error."""
    monkeypatch.setattr(backbones, "with_exact_batch_norm", lambda model: model)
    keras.utils.set_random_seed(3)
    learner = small_conv_bn_maml(keras.layers.BatchNormalization)
    assert any(type(layer) is keras.layers.BatchNormalization
               for layer in learner.backbone._flatten_layers())
    analytic, numeric = directional_derivatives(learner, fixed_episode(tf.float64))
    assert abs(analytic - numeric) > 1e-3 * abs(numeric), (analytic, numeric)


def test_a_user_backbone_with_keras_batchnorm_gets_the_exact_meta_gradient(float64):
    """MAML replaces a backbone's stock Keras BatchNormalization by the exact layer."""
    keras.utils.set_random_seed(3)
    learner = small_conv_bn_maml(keras.layers.BatchNormalization)
    kinds = [type(layer) for layer in learner.backbone._flatten_layers()]
    assert backbones.BatchNormalization in kinds and keras.layers.BatchNormalization not in kinds
    analytic, numeric = directional_derivatives(learner, fixed_episode(tf.float64))
    assert abs(analytic - numeric) < 1e-6 * abs(numeric), (analytic, numeric)


def keras_bn_backbone():
    """A functional backbone with a nested Sequential, stock BatchNormalization in both, and
    moving statistics away from their initial values."""
    inner = keras.Sequential([keras.layers.Conv2D(3, 3, padding="same"),
                              keras.layers.BatchNormalization(momentum=0.5)])
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.BatchNormalization(epsilon=1e-2)(inner(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    model(tf.random.normal([4, 6, 6, 1]) * 9 + 3, training=True)  # moves the statistics
    return model


def test_the_replacement_keeps_weights_statistics_and_settings():
    keras.utils.set_random_seed(0)
    backbone = keras_bn_backbone()
    learner = build_learner("maml", (6, 6, 1), ways=3, backbone=backbone)
    norms = [layer for layer in learner.backbone._flatten_layers()
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert [type(n) for n in norms] == [backbones.BatchNormalization] * 2
    assert sorted((n.momentum, n.epsilon) for n in norms) == [(0.5, 1e-3), (0.99, 1e-2)]
    for mine, theirs in zip(learner.backbone.weights, backbone.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    x = tf.random.normal([5, 6, 6, 1])
    np.testing.assert_allclose(learner.backbone(x, training=False),
                               backbone(x, training=False), rtol=1e-5, atol=1e-5)


class HoldsKerasBatchNorm(keras.layers.Layer):
    """A custom layer holding a stock BatchNormalization: it cannot be rebuilt from config."""

    def __init__(self):
        super().__init__()
        self.norm = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        return self.norm(x, training=training)


def test_a_backbone_whose_keras_batchnorm_cannot_be_replaced_is_refused_in_one_line():
    backbone = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3),
                                 HoldsKerasBatchNorm(), keras.layers.Flatten(),
                                 keras.layers.Dense(3)])
    with pytest.raises(ValueError) as error:
        build_learner("maml", (6, 6, 1), ways=3, backbone=backbone)
    message = str(error.value)
    assert "\n" not in message and "cannot be replaced" in message
    assert "tf_meta.backbones.BatchNormalization, or use first_order=True" in message
    fomaml = build_learner("fomaml", (6, 6, 1), ways=3, backbone=backbone)  # first order: exact
    assert fomaml.backbone is backbone


class ExplicitBatchNormalization(backbones.BatchNormalization):
    """backbones.BatchNormalization always on its explicit-moments path, never fused."""

    def _fusable(self, inputs, training, mask):
        return False


def meta_gradients_and_op_types(learner, episode):
    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            loss = meta_loss(learner, episode)
        return tape.gradient(loss, learner.trainable_variables)

    op_types = {op.type for op in grads.get_concrete_function().graph.get_operations()}
    return [g.numpy() for g in grads()], op_types


@pytest.mark.parametrize("norm_settings", [{}, {"scale": False}, {"center": False}],
                         ids=["scale and offset", "offset only (cbfinn/maml's)", "scale only"])
def test_fused_batchnorm_second_order_meta_gradient_equals_the_exact_one(monkeypatch,
                                                                         norm_settings):
    """The fast float32 path (TF's fused kernel, its gradient differentiated again) is exact.

    Same weights, same episode, two inner steps: the meta-gradient through the fused kernel
    equals the one through explicit moments (the path checked by finite differences above)
    to float32 round-off; stock Keras BatchNorm (kept: MAML's replacement switched off) is
    caught by the same comparison.
    """
    monkeypatch.setattr(backbones, "with_exact_batch_norm", lambda model: model)
    episode = fixed_episode(tf.float32)
    grads = {}
    for name, layer in [("fused", backbones.BatchNormalization),
                        ("explicit", ExplicitBatchNormalization),
                        ("keras", keras.layers.BatchNormalization)]:
        keras.utils.set_random_seed(3)
        grads[name], op_types = meta_gradients_and_op_types(
            small_conv_bn_maml(layer, **norm_settings), episode)
        assert ("FusedBatchNormGradV3" in op_types) == (name == "fused"), (name, op_types)

    def max_difference(a, b):
        scale = max(np.abs(g).max() for g in grads["explicit"])
        return max(np.abs(x - y).max() for x, y in zip(grads[a], grads[b])) / scale

    assert max_difference("fused", "explicit") < 1e-5
    assert max_difference("keras", "explicit") > 1e-3


def test_fused_batchnorm_moving_statistics_are_keras_ones():
    """Outputs, moving mean and (biased) variance of a fused training call are Keras's."""
    x = tf.random.stateless_normal([6, 5, 5, 4], seed=(1, 2)) * 3 + 1
    layers = [backbones.BatchNormalization(momentum=0.9), keras.layers.BatchNormalization(
        momentum=0.9)]
    for layer in layers:
        layer.build(x.shape)
    fused = tf.function(lambda: layers[0](x, training=True))  # in a graph: the fused kernel
    assert "FusedBatchNormV3" in {op.type for op in
                                  fused.get_concrete_function().graph.get_operations()}
    outputs = [fused(), layers[1](x, training=True)]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
    for a, b in zip(layers[0].non_trainable_variables, layers[1].non_trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)


def omniglot_like_maml(first_order):
    keras.utils.set_random_seed(0)
    return build_learner("maml", (28, 28, 1), ways=5, first_order=first_order)


def outer_gradients(learner, episodes):
    grads, _, _ = learner.meta_gradients(episodes)
    return grads


def test_after_one_outer_step_every_variable_has_a_nonzero_gradient():
    source = data.synthetic(10, 6, (28, 28, 1))
    episodes = next(iter(data.make_episode_dataset(source, 5, 1, 2, 2, seed=0)))
    learner = omniglot_like_maml(first_order=False)
    grads = outer_gradients(learner, episodes)
    assert len(grads) == len(learner.trainable_variables) == 18  # 4 x (conv k, b, γ, β) + head
    for variable, grad in zip(learner.trainable_variables, grads):
        assert grad is not None, variable.path
        assert float(tf.reduce_max(tf.abs(grad))) > 0, variable.path


def test_first_order_drops_exactly_the_second_order_term():
    source = data.synthetic(10, 6, (28, 28, 1))
    episode = Episode(*(t[0] for t in next(iter(
        data.make_episode_dataset(source, 5, 1, 2, 1, seed=0)))))
    second = omniglot_like_maml(first_order=False)
    first = omniglot_like_maml(first_order=True)
    for a, b in zip(second.weights, first.weights):
        b.assign(a)
    batch = Episode(*(t[None] for t in episode))
    g2, g1 = outer_gradients(second, batch), outer_gradients(first, batch)
    # First order = the gradient of the query loss w.r.t. the adapted weights themselves.
    fast = [tf.constant(w) for w in second.adapt(episode.support_x, episode.support_y, True)]
    with tf.GradientTape() as tape:
        tape.watch(fast)
        out, _ = fast_weights.forward(first.backbone, fast, episode.query_x, True)
        loss = first.query_loss(episode.query_y, out)
    expected = tape.gradient(loss, fast)
    for a, b in zip(g1, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(g1, g2)) > 1e-4


@pytest.mark.parametrize("network,adapt_batchnorm,sum_inner_loss",
                         [("conv4_strided", True, False), ("conv4_strided_mean", False, True)])
def test_meta_gradient_through_the_papers_strided_networks_matches_finite_differences(
        float64, network, adapt_batchnorm, sum_inner_loss):
    """28x28 images, so the last maps are 2x2; eps 1e-6, as wider steps cross ReLU kinks of
    these 3-filter networks (1e-5 was off by up to 135%, 1e-6 agrees to 1e-10)."""
    keras.utils.set_random_seed(3)
    backbone = keras.Sequential([backbones.NETWORKS[network]((28, 28, 1), filters=3),
                                 keras.layers.Dense(3)])
    learner = MAML(backbone, inner_lr=0.3, inner_steps=2, adapt_batchnorm=adapt_batchnorm,
                   sum_inner_loss=sum_inner_loss)
    learner.build((None, 28, 28, 1))
    analytic, numeric = directional_derivatives(learner, fixed_episode(tf.float64, 28), eps=1e-6)
    assert abs(analytic - numeric) < 1e-6 * abs(numeric), (analytic, numeric)


def test_the_papers_omniglot_networks():
    """Reptile's flattens its 2x2 maps; MAML's averages them and its BatchNorm has no scale."""
    reptile = backbones.NETWORKS["conv4_strided"]((28, 28, 1))
    maml = backbones.NETWORKS["conv4_strided_mean"]((28, 28, 1))
    assert reptile.output_shape == (None, 4 * 64) and maml.output_shape == (None, 64)
    assert [layer.strides for layer in (b.layers[0] for b in maml.layers[1:5])] == [(2, 2)] * 4
    names = [v.path.rsplit("/", 1)[-1] for v in maml.trainable_variables]
    assert "gamma" not in names and names.count("beta") == 4
    assert [v.path.rsplit("/", 1)[-1] for v in reptile.trainable_variables].count("gamma") == 4


def test_without_adapting_batchnorm_the_inner_loop_leaves_only_its_offsets_at_theta():
    learner = build_learner("maml", (28, 28, 1), ways=5, network="conv4_strided_mean",
                            adapt_batchnorm=False)
    source = data.synthetic(10, 6, (28, 28, 1))
    episode = Episode(*(t[0] for t in next(iter(
        data.make_episode_dataset(source, 5, 1, 2, 1, seed=0)))))
    with tf.GradientTape() as tape:
        fast = learner.adapt(episode.support_x, episode.support_y, training=True)
        loss = learner.query_loss(episode.query_y, learner.score(fast, episode, training=True))
    variables = learner.backbone.trainable_variables
    unchanged = [np.array_equal(w, v) for w, v in zip(fast, variables)]
    assert unchanged == ["beta" in v.path for v in variables] and sum(unchanged) == 4
    grads = tape.gradient(loss, variables)  # the offsets still learn in the outer loop
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
