"""Learning curves: read back from a run's TensorBoard logs, tabulated, plotted to a PNG."""

import time

import pytest
import tensorflow as tf

from tf_meta import curves, experiment
from tf_meta.config import RunConfig


def write_validation(workdir, points, wall_time):
    """An events file as Keras's TensorBoard callback writes one validation accuracy per step."""
    folder = workdir / "logs" / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    writer = tf.summary.create_file_writer(str(folder), filename_suffix=f".{wall_time}")
    with writer.as_default():
        for step, value in points:
            tf.summary.scalar(curves.TAG, value, step=step)
    writer.close()


def test_a_run_folder_gives_its_validation_accuracy_at_every_validation(tmp_path):
    config = RunConfig.from_settings(dataset="synthetic", steps=6, eval_every=2, ways=3,
                                     query_shots=2, val_episodes=4, eval_episodes=4,
                                     export_dir="")
    experiment.train_and_evaluate(config, str(tmp_path / "run"))
    curve = curves.validation_curve(str(tmp_path / "run"))
    assert [step for step, _ in curve] == [2, 4, 6]
    assert all(0 <= accuracy <= 1 for _, accuracy in curve)


def test_a_step_validated_again_after_a_resume_keeps_its_newest_value(tmp_path):
    write_validation(tmp_path, [(1000, 0.5), (2000, 0.6)], "b")
    time.sleep(0.01)  # the resumed process, its file named first: the write time decides
    write_validation(tmp_path, [(2000, 0.7), (3000, 0.8)], "a")
    curve = curves.validation_curve(str(tmp_path))
    assert [step for step, _ in curve] == [1000, 2000, 3000]
    assert [value for _, value in curve] == pytest.approx([0.5, 0.7, 0.8])


def test_a_folder_without_validation_logs_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="no validation curve"):
        curves.validation_curve(str(tmp_path))


def test_the_table_has_a_row_per_step_and_a_column_per_curve():
    table = curves.markdown({"a": [(1000, 0.91), (2000, 0.951)], "b": [(2000, 0.5)]})
    assert table.splitlines() == ["| meta-iterations | a | b |", "| ---: | ---: | ---: |",
                                  "| 1,000 | 91.0 |  |", "| 2,000 | 95.1 | 50.0 |"]


def test_the_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plots" / "curve.png"
    curves.plot({"a": [(1000, 0.91), (2000, 0.95)]}, str(path), paper=(98.7, 0.4))
    image = tf.io.decode_png(path.read_bytes())
    assert image.shape[:2] == (400, 640)
    assert len(set(image.numpy().reshape(-1, image.shape[-1])[:, 0].tolist())) > 10  # drawn
