"""Resumable meta-training: a killed run continues where it was and ends where it would have."""

import json
import re
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta
from conftest import ROOT
from tf_meta import backbones, data, experiment, export, training
from tf_meta.config import RunConfig

# A run long enough to be killed in the middle: 120 steps, a checkpoint every 10.
RUN = ["--dataset=synthetic", "--algo=protonet", "--steps=120", "--eval_every=40",
       "--checkpoint_every=10", "--train_ways=5", "--ways=3", "--query_shots=2",
       "--val_episodes=4", "--eval_episodes=6", "--export_dir="]


def train_command(model_dir):
    return [sys.executable, str(ROOT / "train.py"), *RUN, f"--model_dir={model_dir}"]


def checkpoint_steps(directory):
    state = tf.train.get_checkpoint_state(str(directory))
    return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths] if state else []


def final_variables(model_dir):
    reader = tf.train.load_checkpoint(str(model_dir / "checkpoints"))
    # Weights, BatchNorm statistics, optimizer step and moments: everything but bookkeeping.
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith(("model/", "optimizer/", "variables/"))}


def test_a_run_killed_with_sigkill_resumes_and_ends_as_an_uninterrupted_run(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen(train_command(killed), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while max(checkpoint_steps(killed / "checkpoints"), default=0) < 30:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    at_kill = max(checkpoint_steps(killed / "checkpoints"))
    assert 30 <= at_kill < 120, "killed mid-run"

    resumed = subprocess.run(train_command(killed), cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("step ")]
    assert steps[0] == f"{at_kill + 10}/120", resumed.stdout  # continued, not restarted
    assert steps[-1] == "120/120"
    # The uninterrupted run of the same flags, in this process (train.py's run is this call;
    # the killed run's processes were the command line's part).
    experiment.train_and_evaluate(RunConfig.from_flags_file(str(killed / "flags.txt")),
                                  str(whole))

    assert max(checkpoint_steps(killed / "checkpoints")) == 120  # ended at the requested step
    after, expected = final_variables(killed), final_variables(whole)
    assert after.keys() == expected.keys() and len(after) > 50
    for name in expected:
        np.testing.assert_allclose(after[name], expected[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    scores = [json.loads((run / "test_3way_1shot.json").read_text()) for run in (killed, whole)]
    for score in scores:
        del score["train_seconds"]
    assert scores[0] == scores[1]


@pytest.fixture
def small_run():
    """(learner factory, training stream from meta-batch `start`) of a tiny ProtoNet run."""
    pool = data.synthetic(12, 6, (28, 28, 1), noise=2.0)

    def learner():
        keras.utils.set_random_seed(0)
        model = tf_meta.build_learner("protonet", (28, 28, 1))
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        return model

    def stream(start=0):
        return data.make_episode_dataset(pool, 3, 1, 2, 2, seed=0, start=start)

    return learner, stream


def test_the_stream_restarted_at_a_step_is_the_tail_of_the_whole_stream(small_run):
    _, stream = small_run
    whole = [e.support_x.numpy() for e in stream().take(5)]
    tail = [e.support_x.numpy() for e in stream(start=3).take(2)]
    np.testing.assert_array_equal(np.stack(whole[3:]), np.stack(tail))


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(small_run, tmp_path):
    learner, stream = small_run
    model = learner()
    training.fit(model, stream, str(tmp_path), steps=4, checkpoint_every=2, eval_every=2)
    assert checkpoint_steps(tmp_path) == [2, 4]
    data_file = tmp_path / "ckpt-4.data-00000-of-00001"
    data_file.write_bytes(data_file.read_bytes()[:100])  # cut short

    again = learner()
    checkpoints = training.Checkpoints(again, str(tmp_path))
    assert checkpoints.restore() == 2
    # From step 2 the run redoes steps 3-4 and writes a good checkpoint 4.
    assert training.fit(again, stream, str(tmp_path), steps=4, checkpoint_every=2,
                        eval_every=2) == 2
    assert checkpoint_steps(tmp_path)[-1] == 4 and int(again.optimizer.iterations) == 4
    for a, b in zip(again.weights, model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    def learner():  # a regression learner: NaN targets surely give a NaN loss
        keras.utils.set_random_seed(0)
        model = tf_meta.build_learner("maml", (1,), ways=1, backbone=backbones.sinusoid_mlp(),
                                      regression=True, inner_steps=1, inner_lr=0.01)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        return model

    def poisoned(start=0):  # from the third step on, the query targets are NaN
        def poison(i, episode):
            nan = tf.where(i + start >= 2, tf.constant(np.nan), tf.constant(0.0))
            return episode._replace(query_y=episode.query_y + nan)
        return data.make_sinusoid_dataset(5, 5, 2, seed=0, start=start).enumerate().map(poison)

    with pytest.raises(training.Diverged, match=r"NaN or Inf at step 3.*\(step 2\)"):
        training.fit(learner(), poisoned, str(tmp_path), steps=8, checkpoint_every=2,
                     eval_every=2)
    assert checkpoint_steps(tmp_path) == [2]
    restored = learner()
    assert training.restore_for_evaluation(restored, str(tmp_path)) == 2
    assert all(np.isfinite(w.numpy()).all() for w in restored.weights)


def test_an_export_killed_midway_leaves_no_version_and_is_cleaned_up(tmp_path):
    base = tmp_path / "model"
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = base / f"{export.TEMP_PREFIX}{dead.pid}-x1"  # as a SIGKILLed export leaves
    abandoned.mkdir(parents=True)
    (abandoned / "saved_model.pb").write_bytes(b"half")
    alive = base / f"{export.TEMP_PREFIX}{os.getpid()}-x2"  # another export in progress
    alive.mkdir()
    learner = tf_meta.build_learner("protonet", (28, 28, 1))
    assert export.export_learner(learner, str(base), (28, 28, 1)).endswith("1")
    assert sorted(os.listdir(base)) == sorted(["1", alive.name])


@pytest.mark.parametrize("algo", sorted(tf_meta.ALGORITHMS))
def test_a_checkpoint_holds_every_variable_of_the_learner_and_its_optimizer(algo, tmp_path):
    """Restored from a checkpoint, a fresh learner equals the saved one in every variable.

    Catches state tf.train.Checkpoint does not see from the model (it follows a Keras
    layer's variable and layer attributes, not lists or tuples of them): Reptile's inner
    Adam moments were missing from every checkpoint and SNAIL's attention and TC blocks from
    --eval_only restores, until the checkpoint listed `learner.variables` itself.
    """
    def built():
        keras.utils.set_random_seed(0)
        learner = tf_meta.build_learner(algo, (28, 28, 1), ways=5)
        learner.compile(optimizer=learner.meta_optimizer(1e-3, 10, 10, 1.0))
        return learner

    saved = built()
    checkpoints = training.Checkpoints(saved, str(tmp_path))
    rng = np.random.default_rng(1)
    for variable in saved.variables + saved.optimizer.variables:
        variable.assign(rng.uniform(1, 2, variable.shape).astype(variable.dtype))
    checkpoints.save()

    resumed = built()
    training.Checkpoints(resumed, str(tmp_path)).restore()
    evaluated = built()
    training.restore_for_evaluation(evaluated, str(tmp_path))
    for restored in (resumed.variables, evaluated.variables):
        for a, b in zip(saved.variables, restored, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(saved.optimizer.variables, resumed.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


# MAML with one test-time inner step: its inner loop is unrolled, and nine learners trace it.
@pytest.mark.parametrize("algo,settings", [("protonet", {}), ("maml", {"test_inner_steps": 1})],
                         ids=["protonet", "maml"])
def test_fit_evaluate_and_predict_take_tuples_and_dicts_of_the_episode_fields(algo, settings):
    """Keras users' datasets: (support_x, support_y, query_x, query_y) tuples or dicts with
    the field names, and predictions without query_y, answer as Episodes do."""
    source = data.synthetic(20, 10, (28, 28, 1))
    episodes = data.make_episode_dataset(source, 5, 1, 2, 2, seed=0).take(2)
    as_tuples = episodes.map(lambda e: tuple(e))
    as_dicts = episodes.map(lambda e: e._asdict())
    unlabelled = episodes.map(lambda e: {k: v for k, v in e._asdict().items() if k != "query_y"})
    answers = []
    for stream in (episodes, as_tuples, as_dicts):
        keras.utils.set_random_seed(0)
        learner = tf_meta.build_learner(algo, (28, 28, 1), ways=5, **settings)
        learner.compile(optimizer=learner.meta_optimizer(1e-3, 10, 10, 1.0))
        learner.fit(stream, epochs=1, verbose=0)
        answers.append((learner.evaluate(stream, verbose=0, return_dict=True)["loss"],
                        learner.predict(unlabelled, verbose=0)))
    for loss, logits in answers[1:]:
        np.testing.assert_allclose(loss, answers[0][0], rtol=1e-5)
        np.testing.assert_allclose(logits, answers[0][1], rtol=1e-4, atol=1e-4)
    batch = next(iter(episodes))
    for one in (batch, tuple(batch)[:3], {k: v for k, v in batch._asdict().items()}):
        np.testing.assert_allclose(learner.predict_on_batch(one), answers[-1][1][:2],
                                   rtol=1e-4, atol=1e-4)
    from tf_meta.episode import as_episode
    with pytest.raises(ValueError, match="an episode dict has the keys"):
        as_episode({"support_x": 1, "query": 2})
    with pytest.raises(ValueError, match=re.escape("expected an Episode, or a tuple or dict of "
                                                   "its fields")):
        as_episode(tuple(batch)[:2])
