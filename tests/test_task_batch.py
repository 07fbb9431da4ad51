"""A meta-batch as one batched computation (task_batch) computes what the task loop does: MAML's
meta-gradient in training, MAML's and Reptile's test-time adaptation and logits."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_fast_weights import directional_derivatives, float64, meta_loss  # noqa: F401

from tf_meta import backbones, build_learner, data
from tf_meta.algorithms import MAML, Reptile, task_batch
from tf_meta.episode import Episode

TASKS = 3


def meta_batch(dtype, tasks=TASKS, size=6, ways=3):
    """Episodes [T, ...] of 6x6 images, each task its own pixels and label order."""
    rng = np.random.default_rng(0)
    fields = []
    for _ in range(tasks):
        order = rng.permutation(ways)
        fields.append((rng.normal(size=(2 * ways, size, size, 1)) * 50 + 128, np.tile(order, 2),
                       rng.normal(size=(3 * ways, size, size, 1)) * 50 + 128, np.tile(order, 3)))
    x_s, y_s, x_q, y_q = (np.stack(f) for f in zip(*fields))
    return Episode(tf.constant(x_s, dtype), tf.constant(y_s), tf.constant(x_q, dtype),
                   tf.constant(y_q))


def flattened_backbone():
    """Conv (same), BatchNorm with a scale, ReLU, strided valid conv, Flatten, Dense."""
    return keras.Sequential([
        keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, padding="same"),
        backbones.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.Conv2D(2, 3, strides=2), keras.layers.Flatten(), keras.layers.Dense(3)])


def pooled_backbone():
    """Rescaling, max-pooled and strided blocks, BatchNorm without and with a scale, mean
    over space: every image layer task_batch translates."""
    return keras.Sequential([
        keras.Input((6, 6, 1)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(3, 3, padding="same"), backbones.BatchNormalization(scale=False),
        keras.layers.ReLU(), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(4, 3, strides=2, padding="same"), backbones.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])


BACKBONES = {"flattened": flattened_backbone, "pooled": pooled_backbone}


def maml(backbone, **hyperparameters):
    keras.utils.set_random_seed(3)
    learner = MAML(backbone(), inner_lr=0.3, inner_steps=2, **hyperparameters)
    learner.build((None, *learner.backbone.input_shape[1:]))
    return learner


def per_task_loss(learner, episodes):
    """The loop's meta-loss: each task adapted on its own (`fast_weights`), then averaged."""
    tasks = episodes.support_y.shape[0]
    return tf.reduce_mean([meta_loss(learner, Episode(*(t[i] for t in episodes)))
                           for i in range(tasks)])


def batched_loss(learner, episodes):
    return learner.batched_query_loss(episodes)[0]


def gradients(loss_fn, learner, episodes):
    with tf.GradientTape() as tape:
        loss = loss_fn(learner, episodes)
    return [g.numpy() for g in tape.gradient(loss, learner.trainable_variables)]


def relative_difference(a, b):
    return max(np.abs(x - y).max() for x, y in zip(a, b)) / max(np.abs(x).max() for x in a)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("network", sorted(BACKBONES))
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("adapt_batchnorm", [True, False])
def test_batched_meta_gradient_is_the_per_task_one_in_float64(network, first_order,
                                                              adapt_batchnorm):
    learner = maml(BACKBONES[network], first_order=first_order,
                   adapt_batchnorm=adapt_batchnorm)
    assert learner.batching_refusal() is None
    episodes = meta_batch(tf.float64)
    looped = gradients(per_task_loss, learner, episodes)
    batched = gradients(batched_loss, learner, episodes)
    assert relative_difference(looped, batched) < 1e-10


@pytest.mark.usefixtures("float64")
def test_batched_second_order_meta_gradient_matches_finite_differences():
    learner = maml(pooled_backbone)
    analytic, numeric = directional_derivatives(learner, meta_batch(tf.float64),
                                                loss_fn=batched_loss)
    assert abs(analytic - numeric) < 1e-6 * abs(numeric), (analytic, numeric)


@pytest.mark.usefixtures("float64")
def test_batched_regression_meta_gradient_is_the_per_task_one():
    keras.utils.set_random_seed(0)
    learner = MAML(backbones.sinusoid_mlp(kernel_initializer="glorot_uniform"),
                   regression=True, inner_lr=0.01, inner_steps=2)
    learner.build((None, 1))
    rng = np.random.default_rng(0)
    x_s, x_q = rng.uniform(-5, 5, size=(TASKS, 4, 1)), rng.uniform(-5, 5, size=(TASKS, 6, 1))
    episodes = Episode(*(tf.constant(v) for v in (x_s, np.sin(x_s), x_q, np.sin(x_q))))
    assert learner.batching_refusal() is None
    looped = gradients(per_task_loss, learner, episodes)
    assert relative_difference(looped, gradients(batched_loss, learner, episodes)) < 1e-10


def reptile(backbone, **hyperparameters):
    keras.utils.set_random_seed(3)
    learner = Reptile(backbone(), inner_lr=0.01, test_inner_steps=4, test_inner_batch_size=4,
                      **hyperparameters)
    learner.build((None, *learner.backbone.input_shape[1:]))
    # A saved inner Adam state as training leaves it: every test task starts from it.
    for m, v in zip(learner.inner_state.m, learner.inner_state.v):
        v.assign(tf.fill(v.shape, tf.constant(1e-4, v.dtype)))
    learner.inner_state.step.assign(7.0)
    return learner


def alone(learner, episode, task):
    """Test logits of one task adapted on its own; Reptile's mini-batches seeded as its test
    loop seeds task `task` of a meta-batch (meta-step 0, task index)."""
    if not isinstance(learner, Reptile):
        return learner.query_logits(episode, training=False)
    fast = learner.adapt(episode.support_x, episode.support_y, False, seed=(0, task))
    return learner.score(fast, episode, training=False)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("make", [maml, reptile], ids=["maml", "reptile"])
@pytest.mark.parametrize("network", sorted(BACKBONES))
def test_batched_test_logits_are_the_per_task_ones_in_float64(make, network):
    """Each task adapted at test from θ (Reptile: from the saved inner Adam state, on the
    mini-batches its seed draws) and scored on its queries, as `query_logits` does alone."""
    learner = make(BACKBONES[network])
    episodes = meta_batch(tf.float64)
    assert learner.batching_refusal() is None
    batched = learner.batched_logits(episodes, training=False).numpy()
    looped = np.stack([alone(learner, Episode(*(t[i] for t in episodes)), i)
                       for i in range(TASKS)])
    np.testing.assert_allclose(batched, looped, rtol=1e-10, atol=1e-12)
    assert np.abs(looped - looped[0]).max() > 1e-3  # the tasks differ


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("make", [maml, reptile], ids=["maml", "reptile"])
@pytest.mark.parametrize("network", sorted(BACKBONES))
def test_the_served_answers_of_a_batched_test_are_each_querys_own_in_float64(make, network):
    """The evaluation's second answer, what a default export serves: each task adapted as a
    served request is (the tasks at once), and each query scored in a BatchNorm batch of
    the support set and itself alone."""
    learner = make(BACKBONES[network])
    episodes = meta_batch(tf.float64)
    assert learner.batches_tasks(episodes, training=False)
    assert learner.answers_queries_together()
    batched = learner.independent_batch_logits(episodes).numpy()
    looped = np.stack([learner.independent_query_logits(Episode(*(t[i] for t in episodes)))
                       for i in range(TASKS)])
    np.testing.assert_allclose(batched, looped, rtol=1e-10, atol=1e-12)
    together = learner.batched_logits(episodes, training=False, as_served=True).numpy()
    assert np.abs(together - looped).max() > 1e-3  # the queries' batches matter


@pytest.mark.parametrize("algo,network,shots,settings,batches", [
    # the papers' Omniglot test tasks: Reptile 50 steps of 5 images, MAML 5 + 5 images
    ("reptile", "conv4_strided", 1, {}, True), ("maml", "conv4_strided_mean", 1, {}, True),
    ("reptile", "conv4", 1, {}, True), ("maml", "conv4", 1, {}, False),
    ("reptile", "conv4", 5, dict(test_inner_batch_size=10), True),  # measured 1.24x
    ("reptile", "conv4", 5, dict(test_inner_batch_size=20), False)])  # 1.07x
def test_evaluation_batches_the_tasks_where_batching_was_measured_faster(algo, network, shots,
                                                                         settings, batches):
    learner = build_learner(algo, (28, 28, 1), ways=5, network=network, **settings)
    spec = Episode(tf.TensorSpec([50, 5 * shots, 28, 28, 1]), tf.TensorSpec([50, 5 * shots],
                                                                            tf.int32),
                   tf.TensorSpec([50, 5, 28, 28, 1]), tf.TensorSpec([50, 5], tf.int32))
    assert learner.batches_tasks(spec, training=False) == batches


def test_reptile_trains_its_tasks_one_after_another():
    """Each training task continues the inner Adam state the previous one left, so they
    cannot run at once: only the test batches them."""
    learner = reptile(flattened_backbone)
    episodes = meta_batch(tf.float32)
    assert learner.batch_tasks and learner.batching_refusal() is None
    assert learner.batches_tasks(episodes, training=False)
    assert not learner.batches_tasks(episodes, training=True)


@pytest.mark.parametrize("make", [maml, reptile], ids=["maml", "reptile"])
def test_without_batch_tasks_or_transduction_the_test_loops(make):
    episodes = meta_batch(tf.float32)
    for hyperparameters, reason in [(dict(batch_tasks=False), None),
                                    (dict(transductive=False), "--notransductive")]:
        learner = make(flattened_backbone, **hyperparameters)
        assert not learner.batches_tasks(episodes, training=False)
        if reason:
            assert reason in learner.batching_refusal()


def op_types(function, *args):
    graph = tf.function(function).get_concrete_function(*args).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("algo,precision,tolerance", [
    ("maml", "float32", 1e-3), ("fomaml", "float32", 1e-3), ("maml", "bfloat16", 3e-2)])
def test_training_batches_the_papers_network_as_the_loop_computes_it(algo, precision,
                                                                    tolerance):
    """The compiled kernels (grouped convolutions, fused BatchNorm) in float32 and bfloat16,
    to their round-off (1-shot BatchNorm over a few values amplifies float32's to ~1e-4)."""
    keras.utils.set_random_seed(0)
    learner = build_learner(algo, (16, 16, 1), ways=3, network="conv4_strided_mean",
                            adapt_batchnorm=False, sum_inner_loss=True, precision=precision)
    episodes = next(iter(data.make_episode_dataset(data.synthetic(10, 4, (16, 16, 1)), 3, 1,
                                                   1, 4, seed=0)))
    assert "While" not in op_types(learner.meta_gradients, episodes)  # no loop of tasks
    batched, loss, logits = tf.function(learner.meta_gradients)(episodes)
    looped, looped_loss, looped_logits = tf.function(learner.looped_meta_gradients)(episodes)
    assert logits.shape == looped_logits.shape == (4, 3, 3)
    assert relative_difference([g.numpy() for g in looped], [g.numpy() for g in batched]) < (
        tolerance)
    np.testing.assert_allclose(loss, looped_loss, rtol=tolerance)


def test_what_cannot_be_batched_trains_in_the_loop():
    episodes = meta_batch(tf.float32)
    functional = keras.Model(*(lambda x: (x, keras.layers.Dense(3)(keras.layers.Flatten()(x))))(
        keras.Input((6, 6, 1))))
    for learner, reason in [
            (maml(flattened_backbone, transductive=False), "--notransductive updates"),
            (maml(lambda: functional), "is not a keras.Sequential"),
            (maml(flattened_backbone, batch_tasks=False), None)]:
        if reason:
            assert reason in learner.batching_refusal()
        assert "While" in op_types(learner.meta_gradients, episodes)


def image_net(*layers):
    return keras.Sequential([keras.Input((6, 6, 2)), *layers, keras.layers.Flatten(),
                             keras.layers.Dense(3)])


@pytest.mark.parametrize("backbone,reason", [
    (lambda: image_net(keras.layers.Conv2D(2, 3, dilation_rate=2, name="odd")), "no dilation"),
    (lambda: keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Flatten(),
                               keras.layers.Dense(3, activation="softmax", name="odd")]),
     "activation not elementwise"),
    (lambda: image_net(keras.layers.Dropout(0.5, name="odd")), "no batched translation"),
    (lambda: image_net(keras.layers.Rescaling([1.0, 2.0], name="odd")), "per-channel scale"),
    (lambda: keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Dense(3, name="odd")]),
     "on feature maps")])
def test_a_layer_without_a_batched_translation_is_named(backbone, reason):
    refusal = task_batch.unsupported(backbone())
    assert reason in refusal and "'odd'" in refusal and "\n" not in refusal


@pytest.mark.parametrize("network,query_shots,batches", [
    ("conv4_strided_mean", 1, True),  # the papers' Omniglot tasks: measured 1.6x the loop
    ("conv4", 1, False), ("conv4_strided_mean", 15, False), ("conv4", 15, False)])
def test_tasks_are_batched_only_where_batching_was_measured_faster(network, query_shots,
                                                                   batches):
    learner = build_learner("maml", (28, 28, 1), ways=5, network=network)
    spec = Episode(tf.TensorSpec([32, 5, 28, 28, 1]), tf.TensorSpec([32, 5], tf.int32),
                   tf.TensorSpec([32, 5 * query_shots, 28, 28, 1]),
                   tf.TensorSpec([32, 5 * query_shots], tf.int32))
    assert learner.batching_pays(spec) == batches
    assert ("While" not in op_types(learner.meta_gradients, spec)) == batches


def test_an_mlp_regressor_trains_in_the_loop():
    """Batched, the sinusoid's tasks trained at 0.97x the loop's speed."""
    learner = MAML(backbones.sinusoid_mlp(), regression=True)
    learner.build((None, 1))
    spec = Episode(*[tf.TensorSpec([25, 10, 1])] * 4)
    assert learner.batching_refusal() is None and not learner.batching_pays(spec)
