"""A learner speaks Keras: called on an episode it answers the queries; compile() takes the
algorithm's own meta-optimizer and refuses what it would ignore; save("m.keras") and
keras.models.load_model give back the same learner, compiled; Keras's export() points to
tf_meta.export. Every algorithm of the registry passes each test that names it."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tf_meta import ALGORITHMS, Episode, backbones, build_learner, data, protocols
from tf_meta.algorithms import learner_class

# Inner rates suited to the 8-dim synthetic clusters; a small MANN keeps the tests quick.
HYPER = {"maml": dict(inner_lr=0.05), "fomaml": dict(inner_lr=0.05),
         "reptile": dict(inner_lr=0.01, test_inner_steps=2),
         "mann": dict(controller_units=16, memory_slots=8, memory_width=5, read_heads=2)}


def stream(meta_batch_size=2, num_episodes=None, seed=0):
    source = data.synthetic(20, 10, (8,))
    return data.make_episode_dataset(source, 3, 2, 2, meta_batch_size, seed=seed,
                                     num_episodes=num_episodes)


def learner_for(algo, **kwargs):
    return build_learner(algo, (8,), ways=3, **{**HYPER.get(algo, {}), **kwargs})


def as_json(config):
    """A config as the .keras file holds it (tuples become lists)."""
    return json.loads(json.dumps(config))


def assert_same_variables(a, b):
    """Equal variables, but for a SeedGenerator's, which Keras does not save (MANN's LSTM
    cell holds one it never draws from: no dropout)."""
    kept = [[v for v in variables if "seed_generator" not in v.path] for variables in (a, b)]
    for x, y in zip(*kept, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_a_saved_learner_loads_back_with_keras_and_answers_the_same(algo, tmp_path):
    """Algorithm, hyperparameters, head width, backbone, weights and the compiled optimizer
    survive the .keras file: same accuracy on the same episodes, and fit continues."""
    learner = learner_for(algo)
    learner.compile(run_eagerly=True)  # no tracing: seconds; the loaded learner runs so too
    learner.fit(stream(), steps_per_epoch=1, epochs=1, verbose=0)
    path = str(tmp_path / "learner.keras")
    learner.save(path)
    loaded = keras.models.load_model(path)

    assert type(loaded) is type(learner)
    assert as_json(loaded.get_config()) == as_json(learner.get_config())
    assert loaded.max_ways == learner.max_ways
    assert [type(layer) for layer in backbones.nested_layers(loaded.backbone)] == [
        type(layer) for layer in backbones.nested_layers(learner.backbone)]
    assert_same_variables(learner.variables, loaded.variables)
    episodes = stream(num_episodes=2, seed=1)
    scores = [m.evaluate(episodes, verbose=0, return_dict=True) for m in (learner, loaded)]
    assert scores[0]["accuracy"] == scores[1]["accuracy"]
    np.testing.assert_allclose(scores[0]["loss"], scores[1]["loss"], rtol=1e-6)

    assert type(loaded.optimizer) is type(learner.optimizer) and loaded.run_eagerly
    assert int(loaded.optimizer.iterations) == int(learner.optimizer.iterations) == 1
    batch = next(iter(stream(seed=2)))
    for model in (learner, loaded):  # one more step each: the optimizer state came back too
        model.train_step(batch)
    assert_same_variables(learner.variables, loaded.variables)
    assert_same_variables(learner.optimizer.variables, loaded.optimizer.variables)


def test_maml_keeps_its_exact_batch_normalization_through_a_keras_file(tmp_path):
    backbone = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8),
                                 keras.layers.BatchNormalization(), keras.layers.Dense(3)])
    learner = build_learner("maml", (8,), backbone=backbone)
    norm = learner.backbone.layers[1]
    norm.moving_mean.assign(np.arange(8, dtype=np.float32))  # statistics a run would have moved
    learner.save(str(tmp_path / "maml.keras"))
    loaded = keras.models.load_model(str(tmp_path / "maml.keras"))
    assert [type(layer) for layer in loaded.backbone.layers] == [
        keras.layers.Dense, backbones.BatchNormalization, keras.layers.Dense]
    assert_same_variables(learner.variables, loaded.variables)


def test_a_regression_learner_loads_back_as_a_regression_learner(tmp_path):
    learner = build_learner("maml", (1,), backbone=backbones.sinusoid_mlp(), regression=True,
                            inner_lr=0.01)
    learner.save(str(tmp_path / "sinusoid.keras"))
    loaded = keras.models.load_model(str(tmp_path / "sinusoid.keras"))
    assert loaded.regression and loaded.max_ways is None and loaded.inner_lr == 0.01
    rng = np.random.default_rng(0)
    episode = Episode(*(rng.normal(size=(5, 1)).astype(np.float32) for _ in range(4)))
    np.testing.assert_allclose(loaded(episode), learner(episode), rtol=1e-6)


def test_model_checkpoint_keeps_the_best_learner_as_a_keras_file(tmp_path):
    learner = learner_for("protonet")
    learner.compile()
    path = str(tmp_path / "best.keras")
    validation = stream(num_episodes=4, seed=1)
    history = learner.fit(stream(), steps_per_epoch=2, epochs=3, verbose=0,
                          validation_data=validation, callbacks=[
                              keras.callbacks.ModelCheckpoint(path, save_best_only=True)])
    best = keras.models.load_model(path)
    np.testing.assert_allclose(best.evaluate(validation, verbose=0, return_dict=True)["loss"],
                               min(history.history["val_loss"]), rtol=1e-5)
    assert os.listdir(tmp_path) == ["best.keras"]


class Unconfigurable(keras.layers.Layer):
    """A layer Keras cannot write a config for (an array argument, no get_config)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def call(self, x):
        return x


def test_a_save_that_fails_leaves_no_file_and_the_previous_one_intact(tmp_path):
    backbone = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
                                 Unconfigurable(np.ones(2))])
    learner = build_learner("protonet", (8,), backbone=backbone)
    previous = tmp_path / "learner.keras"
    previous.write_bytes(b"the last good save")
    for path in (previous, tmp_path / "new.keras"):
        with pytest.raises(ValueError, match=r"^cannot save .*\.keras: Object Unconfigurable was "
                                             r"created by passing non-serializable [^\n]*$"):
            learner.save(str(path))
    assert previous.read_bytes() == b"the last good save"
    assert os.listdir(tmp_path) == ["learner.keras"]  # no new.keras, no temporary file


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_keras_export_points_to_the_episode_export(algo, tmp_path):
    path = str(tmp_path / "export")
    with pytest.raises(ValueError, match=r"^[A-Za-z]+\.export\(\) would serve the backbone alone, "
                                         r"not episodes: use tf_meta\.export\.export_learner\("
                                         r"learner, '.*export', input_shape=\(8,\)\)"):
        learner_for(algo).export(path)
    assert not os.path.exists(path)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_calling_a_learner_on_an_episode_answers_its_queries(algo):
    """learner(episodes) is predict's answer, [B, Q, ways], for an Episode, a tuple or a dict
    (query_y may be left out); one episode gives [Q, ways]; a tensor still gives the
    backbone's output, which summary() describes."""
    learner = learner_for(algo)
    episodes = next(iter(stream()))
    expected = learner.predict_on_batch(episodes)
    assert expected.shape == (2, 6, 3)
    unlabelled = {k: v for k, v in episodes._asdict().items() if k != "query_y"}
    for form in (episodes, unlabelled):
        np.testing.assert_allclose(learner(form), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(learner.predict_on_batch(unlabelled), expected, rtol=1e-5,
                               atol=1e-6)
    one = Episode(*(t[0] for t in episodes))
    np.testing.assert_allclose(learner(one), learner.query_logits(one, training=False),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(learner(one), expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(learner(one.query_x), learner.backbone(one.query_x))
    lines = []
    learner.summary(print_fn=lambda line, **_: lines.append(line))
    assert learner.backbone.name in "\n".join(lines)


def test_an_episode_of_the_wrong_rank_is_refused_in_one_line():
    episode = Episode(*(t[0] for t in next(iter(stream()))))
    with pytest.raises(ValueError, match=r"^support_y must be \[S\] \(one episode\) or \[B, S\] "
                                         r"\(a meta-batch\); got shape \(1, 1, 6\)$"):
        learner_for("protonet")(episode._replace(support_y=episode.support_y[None, None]))


@pytest.mark.parametrize("argument", ["loss", "loss_weights", "metrics", "weighted_metrics"])
def test_compile_refuses_a_loss_or_metrics_it_would_ignore(argument):
    with pytest.raises(ValueError, match=rf"^compile\(\) got {argument}, which ProtoNet would "
                                         r"ignore: it computes its own loss and metrics "
                                         r"\(loss, accuracy\); leave them out$"):
        learner_for("protonet").compile(**{argument: ["accuracy"]})


def test_compile_without_an_optimizer_gives_reptile_its_interpolation():
    """Reptile's step is θ ← θ + ε(φ − θ), ε = 1 at the first step: θ becomes φ."""
    learner = learner_for("reptile")
    learner.compile()
    assert isinstance(learner.optimizer, keras.optimizers.SGD)
    episodes = next(iter(stream(meta_batch_size=1)))
    phi = learner.adapt(episodes.support_x[0], episodes.support_y[0], training=True)
    learner.train_step(episodes)
    for theta, expected in zip(learner.trainable_variables, phi, strict=True):
        np.testing.assert_allclose(theta.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_compile_takes_the_algorithms_meta_optimizer_unless_given_another(algo):
    """The defaults are the "tf_meta" protocol's rates; an optimizer given is used as it is
    (for Reptile, Adam on θ − φ is the paper's own variant)."""
    learner = learner_for(algo)
    learner.compile()
    defaults = learner.meta_optimizer(**learner.META_OPTIMIZER).get_config()
    assert learner.optimizer.get_config() == {**defaults, "name": learner.optimizer.name}
    settings = protocols.protocol("tf_meta", algo, "synthetic")
    assert learner_class(algo).META_OPTIMIZER == dict(
        meta_lr=settings["meta_lr"], steps=settings["steps"],
        decay_every=settings["lr_decay_every"], decay_rate=settings["lr_decay_rate"])
    adam = keras.optimizers.Adam(1e-3)
    learner.compile(optimizer=adam)
    assert learner.optimizer is adam


def test_a_fresh_process_loads_a_saved_learner_after_a_plain_import_tf_meta(tmp_path):
    """The learners are registered with Keras when tf_meta is imported (not when first used),
    so load_model finds them in a process that only said `import tf_meta`."""
    learner = learner_for("protonet")
    learner.compile()
    path = str(tmp_path / "learner.keras")
    learner.save(path)
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, keras, tf_meta; "
         f"print(type(keras.models.load_model({path!r})).__name__)"],
        capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split()[-1] == "ProtoNet"
