"""benchmarks/time_to_accuracy.py: when validation accuracy first reaches each mark, timed."""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.accuracy_clock import ValidationClock, crossings, reached
from tf_meta import curves

ROOT = pathlib.Path(__file__).resolve().parents[1]


def points(*accuracies):
    """A recorded curve: one validation every 100 steps, 10 s of training apart."""
    return [{"step": 100 * (i + 1), "accuracy": a, "train_seconds": 10.0 * (i + 1)}
            for i, a in enumerate(accuracies)]


def test_a_mark_is_reached_at_the_first_validation_at_or_above_it_even_if_accuracy_dips_after():
    curve = points(0.80, 0.951, 0.94, 0.97, 0.985, 0.96)
    found = crossings(curve, [95, 97, 98])
    assert {mark: p["step"] for mark, p in found.items()} == {95: 200, 97: 400, 98: 500}
    assert found[97]["train_seconds"] == 40.0


def test_an_accuracy_float32_rounded_just_below_its_mark_reaches_it_and_one_query_less_does_not():
    assert reached(float(np.nextafter(np.float32(0.97), np.float32(0))), 97)
    assert not reached(14549 / 15000, 97)  # one right answer fewer of 15,000 queries


def test_a_mark_no_validation_reached_is_reported_as_not_reached():
    found = crossings(points(0.90, 0.96, 0.979), [95, 98])
    assert found[95]["step"] == 200
    assert found[98] is None
    assert crossings([], [95]) == {95: None}


def clock_with_model(**kwargs):
    clock = ValidationClock(**kwargs)
    model = types.SimpleNamespace(stop_training=False, optimizer=types.SimpleNamespace(
        iterations=tf.constant(100)))
    clock.set_model(model)
    return clock, model


def test_the_training_clock_leaves_out_the_validation_runs_time_and_the_total_clock_does_not():
    started = time.monotonic()
    clock, model = clock_with_model(top_mark=98, started=started)
    clock.on_train_begin()
    clock.on_test_begin()
    time.sleep(0.5)  # a validation run
    clock.on_test_end()
    clock.on_epoch_end(0, {"val_accuracy": 0.5})
    [point] = clock.points
    assert point["step"] == 100 and point["accuracy"] == 0.5
    assert point["validation_seconds"] >= 0.5
    assert point["train_seconds"] < 0.25 and point["total_seconds"] >= 0.5
    assert not model.stop_training and clock.stopped is None


def test_the_clock_stops_training_at_the_top_mark_or_when_the_budget_is_spent():
    clock, model = clock_with_model(top_mark=98, started=time.monotonic())
    clock.on_train_begin()
    clock.on_epoch_end(0, {})  # an interval without validation: no point
    assert clock.points == [] and not model.stop_training
    for accuracy in (0.97, 0.98):
        clock.on_test_begin()
        clock.on_test_end()
        clock.on_epoch_end(0, {"val_accuracy": accuracy})
    assert model.stop_training and clock.stopped == "every mark reached"
    assert len(clock.points) == 2

    clock, model = clock_with_model(top_mark=98, started=time.monotonic() - 61,
                                    max_seconds=60)
    clock.on_train_begin()
    clock.on_epoch_end(0, {})
    assert model.stop_training and clock.stopped == "--max_minutes=1 spent"


def harness(*args, env=None):
    return subprocess.run([sys.executable, "-m", "benchmarks.time_to_accuracy", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_the_command_times_the_library_run_and_stops_it_when_the_budget_is_spent(tmp_path):
    """Synthetic data, 2-step validation intervals, a budget that ends at the first one: a
    mark reached at that validation, one never reached, the curve the run's own logs hold."""
    png = importlib.util.find_spec("matplotlib") is not None
    out = tmp_path / "tta.jsonl"
    result = harness("--dataset=synthetic", "--algo=protonet", "--marks=1,100", "--max_steps=6",
                     "--eval_every=2", "--val_episodes=4", "--eval_episodes=4",
                     "--max_minutes=0.0001", f"--workdir={tmp_path}", f"--json={out}",
                     *([f"--png={tmp_path / 'tta.png'}"] if png else []))
    assert result.returncode == 0, result.stderr[-3000:]
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert record == json.loads(result.stdout)
    assert (record["precision"], record["steps"]) == ("float32", 2)  # stopped early: budget
    assert record["stopped"] == "--max_minutes=0.0001 spent"
    [point] = record["curve"]
    assert record["marks"] == {"1": point, "100": None}
    assert 0 < point["train_seconds"] < point["total_seconds"]
    assert record["test"]["episodes"] == 4  # the stopped model was scored
    logged = curves.validation_curve(record["run_folder"])
    assert [(step, pytest.approx(accuracy)) for step, accuracy in logged] == [
        (point["step"], point["accuracy"])]
    assert re.search(r"protonet float32: 1%: [0-9.]+ min \(step 2\)   100%: not reached",
                     result.stderr), result.stderr[-2000:]
    assert not png or (tmp_path / "tta.png").stat().st_size > 0


def test_without_omniglot_the_command_refuses_in_one_line(tmp_path):
    env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path))
    result = harness("--algo=protonet", f"--workdir={tmp_path / 'runs'}", env=env)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TFDS_DATA_DIR" in lines[0], result.stderr[-2000:]


def test_a_max_steps_that_is_not_a_multiple_of_eval_every_is_refused_before_any_run(tmp_path):
    result = harness("--dataset=synthetic", "--max_steps=7", "--eval_every=2",
                     f"--workdir={tmp_path}")
    assert result.returncode == 1 and result.stderr.strip() == (
        "benchmarks.time_to_accuracy: error: --max_steps=7 is not a multiple of "
        "--eval_every=2")
    assert not list(tmp_path.iterdir())


def test_the_plot_draws_the_marks(tmp_path):
    pytest.importorskip("matplotlib")
    curve = {"float32": [(0.5, 0.91), (1.5, 0.96)]}
    for name, marks in (("plain", ()), ("marked", (95, 97))):
        curves.plot(curve, str(tmp_path / f"{name}.png"), xlabel="minutes", marks=marks)
    plain, marked = (tf.io.decode_png((tmp_path / f"{n}.png").read_bytes()).numpy()
                     for n in ("plain", "marked"))
    assert plain.shape == marked.shape and (plain != marked).any()
