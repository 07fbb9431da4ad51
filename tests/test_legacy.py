"""Run folders and exports written by older tf_meta still load and answer the same.

tests/data/legacy/ holds files written by tf_meta at commit aabe6ea (before the run-config /
experiment-module refactor; MANIFEST.json there records the commit and library versions):
for each algorithm a tiny learner on 8-dim vectors (hyper.json), trained 4 steps by
`training.fit` (checkpoints/), exported by `export.export_learner` (export/1/), and the
logits its in-memory `predict_step` gave on a fixed meta-batch (expected.npz); and one
protonet run folder of `train.py` (cli_run/). make_fixtures.py there regenerates them from
an old checkout.

Only APIs meant to outlive refactors are used: tf_meta.build_learner,
tf_meta.training.restore_for_evaluation, tf_meta.Episode, learner.predict_step,
tf.saved_model.load, and train.py's command line.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tf_meta
from tf_meta import training

ROOT = pathlib.Path(__file__).resolve().parents[1]
LEGACY = ROOT / "tests" / "data" / "legacy"
INPUT_SHAPE = (8,)
WAYS = 3
# SNAIL is not here: its fixed-width network makes a 20 MB fixture (make_fixtures.py
# --algos=snail writes it; it passed these tests against this refactor when checked by hand).
ALGOS = ["protonet", "maml", "fomaml", "reptile", "relationnet", "mann"]
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def legacy(algo):
    """(folder, hyperparameters, Episode meta-batch, recorded logits [2, 6, 3]) of `algo`."""
    folder = LEGACY / algo
    hyper = json.loads((folder / "hyper.json").read_text())
    with np.load(folder / "expected.npz") as recorded:
        episodes = tf_meta.Episode(*(tf.constant(recorded[name]) for name in
                                     ("support_x", "support_y", "query_x", "query_y")))
        logits = recorded["logits"]
    assert logits.shape == (2, 6, WAYS)
    return folder, hyper, episodes, logits


@pytest.mark.parametrize("algo", ALGOS)
def test_legacy_checkpoint_restores_and_predicts_the_same(algo):
    folder, hyper, episodes, logits = legacy(algo)
    learner = tf_meta.build_learner(algo, INPUT_SHAPE, ways=WAYS, **hyper)
    assert training.restore_for_evaluation(learner, str(folder / "checkpoints")) == 4
    np.testing.assert_allclose(learner.predict_step(episodes).numpy(), logits, **TOLERANCE)

    # The comparison can fail: untrained weights answer differently.
    untrained = tf_meta.build_learner(algo, INPUT_SHAPE, ways=WAYS, **hyper)
    assert not np.allclose(untrained.predict_step(episodes).numpy(), logits, **TOLERANCE)


@pytest.mark.parametrize("algo", ALGOS)
def test_legacy_export_serves_the_same(algo):
    folder, _, episodes, logits = legacy(algo)
    serve = tf.saved_model.load(str(folder / "export" / "1")).signatures["serving_default"]
    _, inputs = serve.structured_input_signature
    assert {name: (spec.shape.as_list(), spec.dtype) for name, spec in inputs.items()} == {
        "support_images": ([None, *INPUT_SHAPE], tf.float32),
        "support_labels": ([None], tf.int32),
        "query_images": ([None, *INPUT_SHAPE], tf.float32)}

    answer = serve(support_images=tf.cast(episodes.support_x[0], tf.float32),
                   support_labels=tf.cast(episodes.support_y[0], tf.int32),
                   query_images=tf.cast(episodes.query_x[0], tf.float32))
    np.testing.assert_allclose(answer["logits"].numpy(), logits[0], **TOLERANCE)
    np.testing.assert_array_equal(answer["classes"].numpy(), np.argmax(logits[0], axis=-1))
    np.testing.assert_allclose(answer["probabilities"].numpy(),
                               tf.nn.softmax(logits[0], axis=-1).numpy(), **TOLERANCE)


def test_legacy_cli_run_folder_evaluates_the_same(tmp_path):
    run = tmp_path / "cli_run"
    shutil.copytree(LEGACY / "cli_run", run)
    recorded = json.loads((LEGACY / "cli_run" / "test_3way_1shot.json").read_text())
    (run / "test_3way_1shot.json").unlink()  # the run must write it again
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    # flags.txt names the absolute --model_dir it was written to: overridden here.
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"--flagfile={run / 'flags.txt'}",
         f"--model_dir={run}", "--export_dir=", "--eval_only"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    answer = json.loads((run / "test_3way_1shot.json").read_text())
    assert answer["episodes"] == recorded["episodes"] == 6
    assert answer["accuracy"] == pytest.approx(recorded["accuracy"], rel=0, abs=1e-6)
