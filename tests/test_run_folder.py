"""The run folder is a contract: it holds one run, and nothing is lost, mixed or misread.

Each test is a case a hostile user found (issue 15): before the contract these trained
nothing, restored in part, deleted the old run's checkpoints, restarted at step 0 over them,
or scored and exported NaN weights, all with exit 0.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tf_meta import experiment, run_folder, training
from tf_meta.config import RunConfig

TINY = dict(dataset="synthetic", steps=4, eval_every=2, train_ways=5, ways=3, query_shots=2,
            val_episodes=4, eval_episodes=6, export_dir="")


def tiny(**settings):
    return RunConfig.from_settings(**{**TINY, **settings})


def snapshot(folder):
    """path -> bytes of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny ProtoNet run, trained once for the module."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    experiment.train_and_evaluate(tiny(), str(folder))
    return folder


@pytest.fixture
def trained(finished_run, tmp_path):
    """A copy of the finished run in tmp_path/run (its flags.txt names the original folder,
    as a run folder copied by hand does); returns (folder, its files)."""
    folder = tmp_path / "run"
    shutil.copytree(finished_run, folder)
    return folder, snapshot(folder)


OTHER_RUNS = [  # (settings of the second run, a differing setting the message names)
    (dict(algo="maml", meta_batch_size=2, train_query_shots=2), "--algo=protonet there, maml here"),
    (dict(train_ways=4), "--train_ways=5 there, 4 here"),
    (dict(train_shots=5, shots=5), "--train_shots=1 there, 5 here"),
    (dict(seed=7), "--seed=0 there, 7 here"),
    (dict(meta_lr=0.01), "--meta_lr=0.001 there, 0.01 here"),
]


@pytest.mark.parametrize("settings,named", OTHER_RUNS, ids=[n for _, n in OTHER_RUNS])
def test_a_folder_holding_another_run_is_refused_and_left_as_it_was(trained, settings, named):
    folder, before = trained
    with pytest.raises(ValueError) as raised:
        experiment.train_and_evaluate(tiny(**settings, steps=6), str(folder))
    message = str(raised.value)
    assert named in message and "--overwrite" in message and "\n" not in message
    with pytest.raises(ValueError, match="evaluate it with its own settings"):
        experiment.evaluate(tiny(**settings), str(folder))
    assert snapshot(folder) == before


def test_overwrite_replaces_the_run_and_says_what_it_removed(trained):
    folder, _ = trained
    result = experiment.train_and_evaluate(tiny(seed=7), str(folder), overwrite=True)
    assert result.lines[0].startswith(f"--overwrite: removed the run that was in {folder} "
                                      "(checkpoints up to step 4")
    assert RunConfig.from_flags_file(str(folder / "flags.txt")).seed == 7
    assert json.loads((folder / "test_3way_1shot.json").read_text())["steps"] == 4


def test_fewer_steps_than_the_run_has_trained_are_refused(trained):
    folder, before = trained
    with pytest.raises(ValueError, match="is at step 4: --steps=2 would train nothing"):
        experiment.train_and_evaluate(tiny(steps=2, eval_every=2), str(folder))
    assert snapshot(folder) == before


def test_settings_free_to_differ_resume_and_evaluate(trained):
    folder, _ = trained
    more = experiment.train_and_evaluate(tiny(steps=6, eval_every=3, val_episodes=2),
                                         str(folder))
    assert more.scores["steps"] == 6
    assert training.latest_step(str(folder / "checkpoints")) == 6


def test_another_evaluation_never_overwrites_a_result(trained):
    folder, before = trained
    again = experiment.evaluate(tiny(query_shots=3), str(folder))
    assert again.path == str(folder / "test_3way_1shot-2.json")
    assert again.lines[1] == (f"wrote {again.path} (test_3way_1shot.json holds an evaluation "
                              "with other settings)")
    assert (folder / "test_3way_1shot.json").read_bytes() == before["test_3way_1shot.json"]
    same = experiment.evaluate(tiny(), str(folder))  # the run's own test: its own file
    assert same.path == str(folder / "test_3way_1shot.json")


def test_a_checkpoint_that_does_not_fit_is_an_error_not_a_partial_restore(trained):
    """Without flags.txt (a folder copied by hand) the checkpoint itself is checked."""
    folder, _ = trained
    os.remove(folder / "flags.txt")
    before = snapshot(folder)
    with pytest.raises(ValueError, match="does not fit this learner: (variable|it holds)"):
        experiment.train_and_evaluate(tiny(algo="maml", meta_batch_size=2, train_query_shots=2,
                                           steps=6), str(folder))
    assert snapshot(folder) == before


def test_a_damaged_index_resumes_from_the_checkpoint_files_not_from_step_0(trained):
    folder, _ = trained
    (folder / "checkpoints" / "checkpoint").write_text("garbage {{{")
    written = {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").glob("ckpt-*")}
    experiment.train_and_evaluate(tiny(steps=6), str(folder))
    assert training.latest_step(str(folder / "checkpoints")) == 6
    # went on from step 4: a restart at 0 would have rewritten ckpt-2 and ckpt-4
    assert {name: (folder / "checkpoints" / name).stat().st_mtime_ns for name in written} == written


def test_checkpoint_files_none_of_which_reads_back_stop_the_run(trained):
    folder, _ = trained
    for data in (folder / "checkpoints").glob("ckpt-*.data-*"):
        data.write_bytes(b"damaged")
    before = snapshot(folder)
    with pytest.raises(ValueError, match="reads back .*nothing was trained over them"):
        experiment.train_and_evaluate(tiny(steps=6), str(folder))
    assert snapshot(folder) == before


def test_nan_weights_behind_a_finite_loss_stop_the_run_and_nothing_is_exported(tmp_path):
    """ProtoNet at meta_lr 1e30: the weights overflow, ReLU(NaN) = 0 makes every logit 0 and
    the loss ln N, finite; before, the run scored chance and exported the NaN weights."""
    export = tmp_path / "export"
    with pytest.raises(training.Diverged, match="weights became NaN or Inf .*loss stayed finite"):
        experiment.train_and_evaluate(tiny(meta_lr=1e30, export_dir=str(export)),
                                      str(tmp_path / "run"))
    assert not export.exists()
    assert not list((tmp_path / "run").glob("test_*.json"))
    assert training.latest_step(str(tmp_path / "run" / "checkpoints")) == 0  # none written


def test_evaluation_refuses_a_checkpoint_holding_nan_weights(trained, tmp_path):
    folder, _ = trained
    learner = experiment.compile_learner(experiment.make_learner(tiny(), (28, 28, 1)), tiny())
    checkpoints = training.Checkpoints(learner, str(folder / "checkpoints"))
    checkpoints.restore()
    learner.trainable_variables[0].assign(np.full(learner.trainable_variables[0].shape, np.nan))
    checkpoints.manager.save(checkpoint_number=6)  # as the NaN stop's "last good" one could be
    with pytest.raises(ValueError, match="holds NaN or Inf weights .*nothing is evaluated"):
        experiment.evaluate(tiny(export_dir=str(tmp_path / "export")), str(folder))
    assert not (tmp_path / "export").exists()


HOLD = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(600)
""")


def test_one_process_at_a_time_and_a_killed_holder_leaves_no_lock(trained):
    folder, before = trained
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match="another process is running in --model_dir="):
            experiment.train_and_evaluate(tiny(), str(folder))
        assert snapshot(folder) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert experiment.evaluate(tiny(), str(folder)).scores


def test_run_folder_lock_is_exclusive_within_a_process_too(tmp_path):
    with run_folder.lock(str(tmp_path)):
        with pytest.raises(ValueError, match="another process"):
            with run_folder.lock(str(tmp_path)):
                pass
    with run_folder.lock(str(tmp_path)):  # released
        pass


def test_a_meta_batch_that_cannot_fit_in_memory_is_refused_before_building(tmp_path):
    """ProtoNet at --meta_batch_size=20000 (60-way, 1 + 5 images a class) segfaulted, rc 139,
    on this 24 GiB machine: 7.2 million images, at least 31.5 GiB."""
    with pytest.raises(ValueError, match="--meta_batch_size=10000000: one meta-batch of "
                       "training episodes is 300,000,000 images, which need at least .* GiB "
                       r"\(in use, prefetched and as the float32 input\), more than this "
                       "machine's"):
        experiment.train_and_evaluate(tiny(meta_batch_size=10**7), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    images = 20000 * 60 * (1 + 5)
    assert images * 28 * 28 * experiment.BYTES_PER_PIXEL / 2**30 > 24  # the reported case


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_checkpoints(trained,
                                                                                monkeypatch):
    folder, _ = trained
    checkpoints = snapshot(folder / "checkpoints")

    def full(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full)
    with pytest.raises(OSError) as raised:
        experiment.train_and_evaluate(tiny(steps=6), str(folder))
    assert str(raised.value) == (f"cannot write a checkpoint in {folder / 'checkpoints'}: No "
                                 "space left on device")
    assert snapshot(folder / "checkpoints") == checkpoints


def test_a_full_disk_while_writing_the_result_is_one_line(trained, monkeypatch):
    folder, before = trained

    def full(self, text):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.io.gfile.GFile, "write", full)
    with pytest.raises(OSError) as raised:
        experiment.evaluate(tiny(query_shots=3), str(folder))
    assert str(raised.value) == (f"cannot write {folder / 'test_3way_1shot-2.json'}: No space "
                                 "left on device")
    assert snapshot(folder) == before  # nothing half-written
