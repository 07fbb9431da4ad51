"""The MetaLearner contract: registry, declarations, Keras fit/evaluate/predict, callbacks,
resume. Every algorithm of the registry passes every test here."""

import os

import keras
import numpy as np
import pytest

from conftest import fixed_batch_losses
from tf_meta import ALGORITHMS, Episode, MetaLearner, build_learner, data, evaluation
from tf_meta.algorithms import base, learner_class


def stream(meta_batch_size=2, num_episodes=None):
    source = data.synthetic(20, 10, (8,))
    return data.make_episode_dataset(source, 3, 2, 2, meta_batch_size, seed=0,
                                     num_episodes=num_episodes)


# Inner rates suited to the 8-dim synthetic clusters (the Omniglot defaults overshoot here).
HYPER = {"maml": dict(inner_lr=0.05), "fomaml": dict(inner_lr=0.05),
         "reptile": dict(inner_lr=0.01)}


def compiled(algo="protonet", meta_lr=1e-3):
    learner = build_learner(algo, (8,), ways=3, **HYPER.get(algo, {}))
    learner.compile(optimizer=learner.meta_optimizer(meta_lr, steps=100, decay_every=100,
                                                     decay_rate=1.0))
    return learner


def test_registry_builds_every_algorithm_as_a_meta_learner():
    assert set(ALGORITHMS) >= {"protonet", "maml", "fomaml", "reptile"}
    for algo in ALGORITHMS:
        assert isinstance(build_learner(algo, (8,), ways=3), MetaLearner)
    with pytest.raises(ValueError, match="unknown algo 'nope'"):
        build_learner("nope", (8,))


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_algorithm_declares_what_it_is_and_the_declaration_holds(algo):
    declared = learner_class(algo)
    learner = build_learner(algo, (8,), ways=3, **HYPER.get(algo, {}))
    assert set(declared.TASKS) <= set(base.TASKS) and "classification" in declared.TASKS
    assert set(declared.EXTRA_METRICS) <= set(evaluation.EXTRA_METRICS)
    for h in declared.HYPERPARAMETERS:  # every default within its own bound, set on the learner
        assert h.check(h.default) == h.default
    assert list(learner.hyperparameter_values()) == list(declared.hyperparameter_names())
    assert (learner.max_ways is not None) == declared.HAS_HEAD
    if declared.HAS_HEAD:
        assert learner.max_ways == 3
    episode = Episode(*(t[0] for t in next(iter(stream()))))
    logits = learner.query_logits(episode, training=False)
    if declared.ADAPTS:  # the adapt/score pair is the learner's answer, split in two
        fast = learner.adapt(episode.support_x, episode.support_y, training=False)
        np.testing.assert_allclose(learner.score(fast, episode, training=False), logits,
                                   rtol=1e-5, atol=1e-6)
    else:
        assert not hasattr(learner, "adapt")


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_outputs_are_probabilities_whose_argmax_is_the_class(algo):
    learner = build_learner(algo, (8,), ways=3, **HYPER.get(algo, {}))
    episode = Episode(*(t[0] for t in next(iter(stream()))))
    outputs = learner.outputs(learner.query_logits(episode, training=False))
    assert set(outputs) == {"logits", "probabilities", "classes"}
    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (6, 3) and (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(outputs["classes"], probabilities.argmax(axis=-1))
    np.testing.assert_array_equal(outputs["classes"], outputs["logits"].numpy().argmax(axis=-1))


def test_a_hyperparameter_the_algorithm_does_not_take_is_refused():
    with pytest.raises(ValueError, match="--inner_lr does not apply to ProtoNet"):
        build_learner("protonet", (8,), inner_lr=0.1)
    with pytest.raises(ValueError, match="--inner_steps must be >= 1"):
        build_learner("reptile", (8,), ways=3, inner_steps=0)
    with pytest.raises(ValueError, match="ProtoNet learns classification, not regression"):
        build_learner("protonet", (8,), regression=True)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_algorithm_trains_on_the_same_episodes(algo):
    learner = compiled(algo, meta_lr=0.1 if algo == "reptile" else 1e-3)
    history = learner.fit(stream(), steps_per_epoch=1, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert 0.0 <= history.history["accuracy"][0] <= 1.0
    episodes = next(iter(stream(meta_batch_size=2)))
    assert learner.predict_step(episodes).shape == (2, 6, 3)
    episode = Episode(*(t[0] for t in episodes))
    assert learner.query_logits(episode, training=False).shape == (6, 3)  # [Q, ways]

    losses = fixed_batch_losses(learner, episodes, 5)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_train_step_receives_the_batched_episode_intact():
    seen = []

    class Recording(type(compiled())):
        def train_step(self, episodes):
            seen.append((type(episodes), episodes.support_x.shape))
            return super().train_step(episodes)

    learner = Recording(build_learner("protonet", (8,), ways=3).backbone)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3))
    learner.fit(stream(), steps_per_epoch=1, epochs=1, verbose=0)
    assert seen[0] == (Episode, (2, 6, 8))


def test_fit_evaluate_predict_speak_episodes():
    learner = compiled()
    history = learner.fit(stream(), steps_per_epoch=3, epochs=2, verbose=0,
                          validation_data=stream(num_episodes=4))
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    scores = learner.evaluate(stream(num_episodes=6), verbose=0, return_dict=True)
    assert set(scores) == {"loss", "accuracy"} and np.isfinite(scores["loss"])
    logits = learner.predict(stream(num_episodes=5), verbose=0)
    assert logits.shape == (5, 6, 3)  # [episodes, queries, ways], remainder batch included


def test_tensorboard_and_checkpoint_callbacks_write(tmp_path):
    learner = compiled()
    learner.fit(stream(), steps_per_epoch=2, epochs=1, verbose=0, callbacks=[
        keras.callbacks.TensorBoard(str(tmp_path / "logs")),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "w.weights.h5"), save_weights_only=True)])
    assert os.listdir(tmp_path / "logs" / "train")
    restored = build_learner("protonet", (8,), ways=3)
    restored.load_weights(str(tmp_path / "w.weights.h5"))
    for a, b in zip(learner.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_backup_and_restore_resumes_an_interrupted_fit(tmp_path):
    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("killed")

    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="killed"):
        compiled().fit(stream(), steps_per_epoch=2, epochs=4, verbose=0,
                       callbacks=[keras.callbacks.BackupAndRestore(backup), Crash()])
    resumed = compiled()
    history = resumed.fit(stream(), steps_per_epoch=2, epochs=4, verbose=0,
                          callbacks=[keras.callbacks.BackupAndRestore(backup)])
    assert history.epoch == [2, 3]
    assert int(resumed.optimizer.iterations) == 8  # 2 epochs restored + 2 run, 2 steps each
