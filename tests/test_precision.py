"""Mixed precision: every learner trains in bfloat16 and float16 with float32 weights, answers
in float32, keeps its precision through `.keras` files and exports, and refuses what it
cannot train in, in one line."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_meta import ALGORITHMS, backbones, build_learner, data, precision
from tf_meta.algorithms import learner_class
from tf_meta.algorithms.relation import RelationModule

SHAPE = (28, 28, 1)
LOW = ("bfloat16", "float16")


def episodes(algo, seed=0, meta_batch_size=2):
    queries = 1 if learner_class(algo).__name__ in ("MANN", "SNAIL") else 2
    source = data.synthetic(12, 6, SHAPE, seed=seed)
    return data.make_episode_dataset(source, 3, 1, queries, meta_batch_size, seed)


def network_layers(learner):
    """Every layer the learner runs, the learner excluded."""
    return list(learner._flatten_layers(include_self=False, recursive=True))


@pytest.mark.parametrize("low", LOW)
@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_learner_trains_in_low_precision_with_float32_weights_and_answers(algo, low):
    keras.utils.set_random_seed(0)
    learner = build_learner(algo, SHAPE, ways=3, precision=low)
    learner.compile()
    history = learner.fit(episodes(algo), steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert learner.precision == low
    assert {v.dtype for v in learner.weights} == {"float32"}
    backbone_dtypes = {layer.compute_dtype for layer in network_layers(learner.backbone)}
    assert backbone_dtypes == {low}, f"{algo}: the backbone computes in {backbone_dtypes}"
    batch = next(iter(episodes(algo, seed=1)))
    logits = learner.predict_on_batch(batch)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()


def test_mann_keeps_its_controller_and_memory_in_float32():
    learner = build_learner("mann", SHAPE, ways=3, precision="bfloat16")
    for layer in (learner.controller, learner.interface, learner.head):
        assert layer.compute_dtype == "float32", layer.name


@pytest.mark.parametrize("algo", ["relationnet", "snail"])
def test_a_learners_own_networks_compute_in_its_precision_too(algo):
    learner = build_learner(algo, SHAPE, ways=3, precision="bfloat16")
    own = learner.relation if algo == "relationnet" else learner.net
    assert {layer.compute_dtype for layer in own._flatten_layers()} == {"bfloat16"}


def test_float16_scales_the_loss_except_reptiles_weight_difference():
    for algo in ("protonet", "maml", "reptile"):
        learner = build_learner(algo, SHAPE, ways=3, precision="float16")
        learner.compile()
        scaled = isinstance(learner.optimizer, keras.optimizers.LossScaleOptimizer)
        assert scaled == (algo != "reptile"), algo
    for low in ("float32", "bfloat16"):
        learner = build_learner("protonet", SHAPE, precision=low)
        learner.compile()
        assert not isinstance(learner.optimizer, keras.optimizers.LossScaleOptimizer)


def test_gradient_clipping_sees_the_unscaled_meta_gradient_under_float16():
    learner = build_learner("relationnet", SHAPE, precision="float16", clip_norm=1.0)
    learner.compile()
    learner.optimizer.build(learner.trainable_variables)
    scale = float(learner.optimizer.dynamic_scale)
    assert scale > 1
    unscaled = [tf.fill(v.shape, 0.5) for v in learner.trainable_variables]
    finished = learner._finish_scaled()([g * scale for g in unscaled])
    expected = learner.finish_gradients(unscaled)
    for f, e in zip(finished, expected):
        np.testing.assert_allclose(f / scale, e, rtol=1e-6)


def test_a_saved_learner_loads_back_in_its_precision(tmp_path):
    learner = build_learner("protonet", SHAPE, precision="bfloat16")
    learner.compile()
    path = tmp_path / "m.keras"
    learner.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.precision == "bfloat16"
    assert {layer.compute_dtype for layer in network_layers(loaded.backbone)} == {"bfloat16"}
    batch = next(iter(episodes("protonet")))
    np.testing.assert_array_equal(learner.predict_on_batch(batch), loaded.predict_on_batch(batch))


def test_a_low_precision_export_serves_float32_and_the_learners_classes(tmp_path):
    from tf_meta.export import export_learner
    keras.utils.set_random_seed(0)
    learner = build_learner("protonet", SHAPE, precision="bfloat16")
    batch = next(iter(episodes("protonet", meta_batch_size=1)))
    path = export_learner(learner, str(tmp_path / "protonet"), input_shape=SHAPE)
    served = tf.saved_model.load(path).signatures["serving_default"]
    answer = served(support_images=tf.cast(batch.support_x[0], tf.float32),
                    support_labels=tf.cast(batch.support_y[0], tf.int32),
                    query_images=tf.cast(batch.query_x[0], tf.float32))
    assert answer["logits"].dtype == tf.float32
    expected = np.argmax(learner.predict_on_batch(batch)[0], axis=-1)
    np.testing.assert_array_equal(answer["classes"], expected)


def round_trip_casts(graph):
    """Cast ops of `graph` that undo the Cast feeding them (bfloat16 -> float32 -> bfloat16)."""
    return [op.name for op in graph.get_operations()
            if op.type == "Cast" and op.inputs[0].op.type == "Cast"
            and op.inputs[0].op.inputs[0].dtype == op.outputs[0].dtype]


NETWORKS = {
    "conv4": lambda: backbones.conv4(SHAPE),
    "strided_conv4": lambda: backbones.strided_conv4(SHAPE),
    "relation_embedding": lambda: backbones.relation_embedding(SHAPE),
    "relation_module": lambda: RelationModule((5, 5, 8), filters=8),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_feature_maps_cross_from_block_to_block_in_the_low_precision(name):
    network = precision.set_policy(NETWORKS[name](), "mixed_bfloat16")
    inputs = ((tf.random.uniform([2, 3, 5, 5, 8]), tf.random.uniform([2, 4, 5, 5, 8]))
              if name == "relation_module" else (tf.random.uniform([4, *SHAPE], maxval=255),))

    @tf.function
    def forward_and_backward(*inputs):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(network(*inputs, training=True), tf.float32))
        return tape.gradient(loss, network.trainable_variables)

    graph = forward_and_backward.get_concrete_function(*inputs).graph
    assert round_trip_casts(graph) == []


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_a_block_computes_what_keras_sequential_computes_with_its_layers(policy):
    keras.utils.set_random_seed(0)
    block = backbones.conv_block(8, name="block")
    images = tf.random.uniform([4, 6, 6, 3])
    block(images)
    block = precision.set_policy(block, policy)
    plain = keras.Sequential(block.layers)
    batch_norm = block.layers[1]

    for training in (True, False):
        before = batch_norm.moving_mean.numpy()
        got = tf.function(lambda x: block(x, training=training))(images)
        moved = not np.array_equal(before, batch_norm.moving_mean.numpy())
        assert moved == training
        want = tf.function(lambda x: plain(x, training=training))(images)
        np.testing.assert_array_equal(tf.cast(got, tf.float32), tf.cast(want, tf.float32))
        assert got.dtype == block.compute_dtype
        # fast weights' path (tf_meta.algorithms.fast_weights): `call` without `__call__`
        stateless, _ = tf.function(lambda x: block.stateless_call(
            block.trainable_variables, block.non_trainable_variables, x,
            training=training))(images)
        np.testing.assert_array_equal(tf.cast(stateless, tf.float32), tf.cast(want, tf.float32))


@pytest.mark.parametrize("given, message", [
    ("bfloat32", "unknown precision 'bfloat32'; choose from float32, bfloat16, float16"),
    ("mixed_bfloat16", "unknown precision 'mixed_bfloat16'"),
])
def test_an_unknown_precision_is_refused_in_one_line(given, message):
    with pytest.raises(ValueError, match=message) as raised:
        build_learner("protonet", SHAPE, precision=given)
    assert "\n" not in str(raised.value)


def test_the_global_keras_policy_is_the_default_and_a_low_precision_variable_one_is_refused():
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        assert build_learner("protonet", SHAPE).precision == "bfloat16"
        keras.config.set_dtype_policy("bfloat16")
        with pytest.raises(ValueError, match="the Keras dtype policy is 'bfloat16': set "
                                             "precision to one of float32, bfloat16, float16"):
            build_learner("protonet", SHAPE)
    finally:
        keras.config.set_dtype_policy("float32")
    assert precision.precision_of("float32") == "float32"
