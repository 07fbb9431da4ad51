"""Storage through tf.io.gfile: a whole run and its export on TensorFlow's in-memory ram://
file system, as on gs:// or any file system TF has; nothing of it lands in a local folder
named after the scheme ("ram:"), and a scheme TF lacks is one line before anything runs.

ram:// lives in this process only, so these runs are in-process (experiment's library
calls, as train.py makes them).
"""

import json
import os
import re
import uuid

import pytest
import tensorflow as tf

from tf_meta import experiment, export, files, run_folder, training
from tf_meta.config import RunConfig

TINY = dict(dataset="synthetic", steps=4, eval_every=2, train_ways=5, ways=3, query_shots=2,
            val_episodes=4, eval_episodes=6)


@pytest.fixture
def ram(tmp_path, monkeypatch):
    """A fresh ram:// root, with the working folder an empty local one (where a path
    mistaken for a local one would land)."""
    monkeypatch.chdir(tmp_path)
    return f"ram://{uuid.uuid4().hex}"


def read(path):
    with tf.io.gfile.GFile(path) as f:
        return f.read()


def test_a_whole_run_trains_resumes_evaluates_and_exports_on_ram_and_writes_nothing_local(
        ram, tmp_path, monkeypatch):
    run, base = f"{ram}/run", f"{ram}/export"
    config = RunConfig.from_settings(**TINY, export_dir=base)
    moved, rename = [], tf.io.gfile.rename

    def recorded(source, target, overwrite=False):
        moved.append(target)
        rename(source, target, overwrite)

    monkeypatch.setattr(tf.io.gfile, "rename", recorded)
    result = experiment.train_and_evaluate(config, run)
    assert result.path == f"{run}/test_3way_1shot.json"
    assert json.loads(read(result.path)) == result.scores and result.scores["episodes"] == 6
    assert RunConfig.from_flags_file(f"{run}/flags.txt") == config
    assert training.latest_step(f"{run}/checkpoints") == 4
    assert tf.io.gfile.glob(f"{run}/logs/validation/events.out.tfevents.*")
    assert result.export == f"{base}/1"
    assert {"serving_default", "encoded"} <= set(tf.saved_model.load(result.export).signatures)
    meta = json.loads(read(f"{base}/1/assets.extra/tf_meta.json"))
    assert meta["algo"] == "protonet" and meta["test"]["episodes"] == 6
    # No folder rename on ram:// (nor on GCS): the files move in one by one, saved_model.pb
    # last, so a TF Serving poller that finds it finds the variables it needs beside it.
    moved = [path for path in moved if path.startswith(f"{base}/1/")]
    assert moved[-1] == f"{base}/1/saved_model.pb"
    assert {f"{base}/1/variables/variables.index", f"{base}/1/assets.extra/tf_meta.json"} < set(
        moved)

    # The same command again: the run is at its --steps, so nothing more is trained. Its
    # export picks version 1, which is taken by the time it moves in: it takes 2.
    with tf.io.gfile.GFile(f"{base}/1/saved_model.pb", "rb") as f:
        first = f.read()
    counts, real = iter([1]), export.next_version
    monkeypatch.setattr(export, "next_version", lambda path: next(counts, None) or real(path))
    again = experiment.train_and_evaluate(config, run)
    assert training.latest_step(f"{run}/checkpoints") == 4
    assert again.scores["accuracy"] == result.scores["accuracy"]
    assert again.export == f"{base}/2" and next(counts, None) is None
    with tf.io.gfile.GFile(f"{base}/1/saved_model.pb", "rb") as f:
        assert f.read() == first
    # --eval_only with other test settings: its own result file, flags.txt untouched.
    flags = read(f"{run}/flags.txt")
    evaluated = experiment.evaluate(RunConfig.from_settings(**{**TINY, "ways": 4},
                                                            export_dir=""), run)
    assert json.loads(read(f"{run}/test_4way_1shot.json")) == evaluated.scores
    assert read(f"{run}/flags.txt") == flags

    assert sorted(p.rstrip("/") for p in tf.io.gfile.listdir(base)) == ["1", "2"]  # no temporary
    assert not tf.io.gfile.glob(f"{ram}/*/.tf_meta-write-check-*")  # the probes are gone
    assert os.listdir(tmp_path) == []  # no local "ram:" folder


@pytest.mark.parametrize("where", ["model_dir", "export_dir"])
def test_a_file_system_tensorflow_lacks_is_one_line_before_anything_runs(where, ram, tmp_path):
    paths = {"model_dir": f"{ram}/run", "export_dir": f"{ram}/export"}
    paths[where] = "nosuchfs://bucket/" + where
    config = RunConfig.from_settings(**TINY, export_dir=paths["export_dir"])
    with pytest.raises(ValueError) as raised:
        experiment.train_and_evaluate(config, paths["model_dir"])
    assert str(raised.value) == (f"cannot write 'nosuchfs://bucket/{where}': this TensorFlow "
                                 "has no file system for nosuchfs:// (gs:// and ram:// are "
                                 "built in; others need a plugin that registers them)")
    assert not tf.io.gfile.glob(f"{ram}/*") and os.listdir(tmp_path) == []


def test_a_file_url_is_a_local_folder_and_is_locked(tmp_path):
    assert files.is_local(f"file://{tmp_path}") and not files.is_local("gs://bucket/run")
    with run_folder.lock(f"file://{tmp_path}"):
        with pytest.raises(ValueError, match="another process is running"):
            with run_folder.lock(str(tmp_path)):
                pass
    with run_folder.lock("ram://no/lock/there"):  # TF's file systems have no lock
        pass


def test_a_remote_path_that_is_a_file_is_refused_as_a_folder_in_one_line():
    from tf_meta import files

    path = "ram://storage_test/a_file"
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("not a folder")
    with pytest.raises(ValueError, match=re.escape(f"cannot write {path!r}: it is not a folder")):
        files.check_writable(path)
    files.check_writable("ram://storage_test/a_folder")  # a folder to be: writable
