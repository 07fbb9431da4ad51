"""experiment.train_and_evaluate / evaluate in-process, as flax's train_test.py runs its main.

A tiny run on synthetic data leaves every artefact of a run folder; bad input that needs the
data or the file system to see fails with one line before anything is written.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_meta import experiment
from tf_meta.config import RunConfig

TINY = dict(dataset="synthetic", steps=4, eval_every=2, train_ways=5, ways=3, query_shots=2,
            val_episodes=4, eval_episodes=6)


def tiny(tmp_path, **settings):
    return RunConfig.from_settings(**{**TINY, "export_dir": str(tmp_path / "export"),
                                      **settings})


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_run_leaves_flags_checkpoints_logs_result_and_an_export(tmp_path):
    config = tiny(tmp_path)
    result = experiment.train_and_evaluate(config, str(tmp_path / "run"))
    assert result.path == str(tmp_path / "run" / "test_3way_1shot.json")
    scores = json.loads((tmp_path / "run" / "test_3way_1shot.json").read_text())
    assert scores == result.scores
    assert scores["episodes"] == 6 and 0 <= scores["accuracy"] <= 1 and scores["ci95"] >= 0
    assert scores["algo"] == "protonet" and scores["steps"] == 4
    assert result.lines[0].startswith("test accuracy 3-way 1-shot: ")
    assert result.lines[0].endswith("% (95% CI, 6 episodes)")
    assert result.lines[-1] == f"exported SavedModel to {result.export}"
    assert (tmp_path / "run" / "checkpoints" / "checkpoint").is_file()
    assert os.listdir(tmp_path / "run" / "logs")
    assert RunConfig.from_flags_file(str(tmp_path / "run" / "flags.txt")) == config
    assert (tmp_path / "export" / "1" / "saved_model.pb").is_file()

    # evaluate(): the checkpoint's learner on other test episodes, flags.txt untouched.
    flags_before = (tmp_path / "run" / "flags.txt").read_text()
    again = experiment.evaluate(tiny(tmp_path, ways=4), str(tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "test_4way_1shot.json").read_text())["episodes"] == 6
    assert again.export == str(tmp_path / "export" / "2")
    assert (tmp_path / "run" / "flags.txt").read_text() == flags_before


def test_evaluate_scores_the_trained_weights(tmp_path):
    """evaluate() after training gives the training run's own score: it restored the weights."""
    trained = experiment.train_and_evaluate(tiny(tmp_path, export_dir=""), str(tmp_path / "run"))
    evaluated = experiment.evaluate(tiny(tmp_path, export_dir=""), str(tmp_path / "run"))
    assert evaluated.scores["accuracy"] == trained.scores["accuracy"]
    assert evaluated.export is None


def test_the_learner_a_config_describes(tmp_path):
    config = RunConfig.from_settings(algo="maml", dataset="sinusoid", inner_lr=0.02)
    learner = experiment.make_learner(config, (1,))
    assert learner.regression and learner.inner_lr == 0.02 and learner.test_inner_steps == 10
    assert learner.backbone.name == "sinusoid_mlp"  # the dataset's network, the paper's
    reptile = experiment.make_learner(RunConfig(algo="reptile", protocol="paper", ways=4),
                                      (28, 28, 1))
    assert reptile.max_ways == 4 and reptile.inner_batch_size == 10
    assert reptile.backbone.layers[0].name == "conv4_strided"  # the paper protocol's network
    strided = experiment.make_learner(RunConfig(algo="maml", network="conv4_strided_mean"),
                                      (28, 28, 1))
    assert strided.backbone.layers[0].name == "conv4_strided_mean"


def test_a_regression_run_and_its_adapted_export(tmp_path):
    config = RunConfig.from_settings(algo="maml", dataset="sinusoid", steps=2, eval_every=2,
                                     val_episodes=4, eval_episodes=6,
                                     export_adapted="test_episode",
                                     export_dir=str(tmp_path / "maml"))
    result = experiment.train_and_evaluate(config, str(tmp_path / "run"))
    assert result.lines[0].startswith("test MSE sinusoid 5-shot: ")
    assert result.path.endswith("test_sinusoid_5shot.json")
    assert result.scores["inner_lr"] == 0.01 and result.scores["test_inner_steps"] == 10
    assert result.adapted_export == str(tmp_path / "maml_adapted" / "1")
    served = tf.saved_model.load(result.adapted_export).signatures["serving_default"]
    assert served(images=tf.zeros([3, 1]))["predictions"].shape == (3, 1)


def test_a_transductive_learner_also_reports_what_its_default_export_serves(tmp_path):
    """MAML's test normalises a task's queries as one batch; the default export answers each
    query on its own, and the run says how well (the MAML paper checkpoint: 93.07% served,
    97.83% tested; docs/RESULTS.md)."""
    # One test-time inner step: MAML's inner loop is unrolled, each step more graph to trace.
    maml = dict(algo="maml", meta_batch_size=2, train_query_shots=2, test_inner_steps=1)
    result = experiment.train_and_evaluate(tiny(tmp_path, **maml), str(tmp_path / "run"))
    served = result.scores["served_accuracy"]
    assert 0 <= served["accuracy"] <= 1 and served["ci95"] >= 0
    assert result.lines[1].startswith("served, each query on its own: ")
    meta = json.loads((tmp_path / "export" / "1" / "assets.extra" / "tf_meta.json").read_text())
    assert meta["queries"] == "each on its own"
    as_tested = experiment.evaluate(tiny(tmp_path, **maml, serve_transductive=True),
                                     str(tmp_path / "run"))
    assert "served_accuracy" not in as_tested.scores
    meta = json.loads((tmp_path / "export" / "2" / "assets.extra" / "tf_meta.json").read_text())
    assert meta["queries"] == "one batch (transductive)"


def test_trainval_trains_on_the_validation_classes_too_and_validates_nothing(tmp_path):
    from tf_meta import datasets
    config = tiny(tmp_path, trainval=True, export_dir="")
    streams, plain = datasets.streams(config), datasets.streams(tiny(tmp_path))
    assert streams.val is None and plain.val is not None
    val = datasets.DATASETS["synthetic"].load(datasets.Location("vinyals", None, False, 0))["val"]
    val_images = {image.tobytes() for image in val.labelled_examples()[0]}

    def seen(stream):  # the val-class images among 20 meta-batches' support sets
        images = np.concatenate([b.support_x.numpy().reshape(-1, 28, 28, 1)
                                 for b in stream.take(20)])
        return sum(image.tobytes() in val_images for image in images)

    assert seen(streams.train(0)) > 0 and seen(plain.train(0)) == 0
    result = experiment.train_and_evaluate(config, str(tmp_path / "run"))
    assert "--trainval" in (tmp_path / "run" / "flags.txt").read_text().split()
    assert result.scores["trainval"] is True
    assert not (tmp_path / "run" / "logs" / "validation").exists()
    with pytest.raises(ValueError, match="--trainval=True there, False here"):
        experiment.train_and_evaluate(tiny(tmp_path, export_dir="", steps=8),
                                      str(tmp_path / "run"))


def test_declared_extra_metrics_are_reported(tmp_path):
    config = tiny(tmp_path, algo="mann", export_dir="", controller_units=8, memory_slots=8,
                  memory_width=4, read_heads=1, train_shots=2, train_query_shots=1,
                  meta_batch_size=2)
    result = experiment.train_and_evaluate(config, str(tmp_path / "run"))
    # 5 classes x 10 samples need a head of >= 5: this 5-way head can; the run reports it.
    assert set(result.scores["instance_accuracy"]) == {1, 2, 3, 4, 5, 10}
    assert any(line.startswith("instance accuracy (5 classes x 10 samples) at presentation 1: ")
               for line in result.lines)


def write_images(root, layout, size=12):
    """layout: {class folder: number of PNGs, or file path: its bytes}, relative to root."""
    for path, content in layout.items():
        if isinstance(content, bytes):
            os.makedirs((root / path).parent, exist_ok=True)
            (root / path).write_bytes(content)
            continue
        os.makedirs(root / path, exist_ok=True)
        for i in range(content):
            pixels = np.full((size, size, 1), 20 * i + 10 * len(path), np.uint8)
            (root / path / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())


def bad_runs(tmp):
    """(name, settings, train?, message): bad input only the data or the disk reveal."""
    (tmp / "a_file").write_text("a file where a folder should be")
    (tmp / "m_adapted").write_text("a file where the adapted export's folder should be")
    write_images(tmp / "support", {f"c{c}": 2 for c in range(6)}, size=28)
    write_images(tmp / "no_val", {f"{split}/c{c}": 3 for split in ("train", "test")
                                  for c in range(5)})
    return [
        ("--trainval on a folder without validation classes",
         dict(dataset="folder", data_dir=str(tmp / "no_val"), trainval=True),
         "--trainval: --dataset=folder has no validation classes"),
        ("more test ways than val classes", dict(ways=21, train_ways=21),
         "ways=21 exceeds the 20 classes of the val split"),
        ("more train ways than train classes", dict(train_ways=61),
         "ways=61 exceeds the 60 classes of the train split"),
        ("shots + queries beyond a class", dict(shots=10, query_shots=11),
         "shots + query_shots = 21 exceeds"),
        ("a missing image folder", dict(dataset="folder", data_dir=str(tmp / "missing")),
         "does not exist"),
        ("a support folder that is missing", dict(algo="maml", export_adapted=str(tmp / "no")),
         "does not exist"),
        ("a support folder of more classes than the head",
         dict(algo="maml", export_adapted=str(tmp / "support")),
         "has 6 classes, more than the 5-way head"),
        ("an export path under a file", dict(export_dir=str(tmp / "a_file" / "export")),
         "is not a folder"),
        ("an export path that is a file", dict(export_dir=str(tmp / "a_file")),
         "is not a folder"),
        ("an adapted export path that is a file",
         dict(algo="maml", export_adapted="test_episode", export_dir=str(tmp / "m")),
         "cannot write '" + str(tmp / "m_adapted") + "'"),
        ("multi_worker without TF_CONFIG", dict(strategy="multi_worker"),
         "--strategy=multi_worker needs TF_CONFIG"),
    ]


def test_bad_input_fails_with_one_line_before_anything_is_written(tmp_path):
    for name, settings, message in bad_runs(tmp_path):
        before = tree(tmp_path)
        with pytest.raises(ValueError) as raised:
            experiment.train_and_evaluate(tiny(tmp_path, **settings), str(tmp_path / "run"))
        assert message in str(raised.value) and "\n" not in str(raised.value), name
        assert tree(tmp_path) == before, name


def test_a_model_dir_under_a_file_and_evaluation_without_a_checkpoint_fail_first(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="is not a folder"):
        experiment.train_and_evaluate(tiny(tmp_path), str(tmp_path / "a_file" / "run"))
    with pytest.raises(ValueError, match="needs a trained run in --model_dir="):
        experiment.evaluate(tiny(tmp_path), str(tmp_path / "run"))
    assert tree(tmp_path) == ["a_file"]


def test_a_folder_from_before_protocols_is_not_continued_under_the_paper_protocol(tmp_path):
    """Its flags.txt has no --protocol line: the run used tf_meta's settings, and the
    settings the file does not list would now come from the paper (another network)."""
    experiment.train_and_evaluate(tiny(tmp_path, export_dir=""), str(tmp_path / "run"))
    flags = tmp_path / "run" / "flags.txt"
    flags.write_text("".join(line + "\n" for line in flags.read_text().splitlines()
                             if not line.startswith("--protocol=")))
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    for run in (experiment.evaluate, experiment.train_and_evaluate):
        with pytest.raises(ValueError) as raised:
            run(tiny(tmp_path, protocol="paper", export_dir="", steps=6), str(tmp_path / "run"))
        assert "written before --protocol existed" in str(raised.value)
        assert "add --protocol=tf_meta" in str(raised.value) and "\n" not in str(raised.value)
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
    assert experiment.evaluate(tiny(tmp_path, export_dir=""), str(tmp_path / "run")).scores


SPLIT = {**{f"train/c{c}": 4 for c in range(6)}, **{f"test/c{c}": 4 for c in range(3)}}
BAD_FOLDERS = [
    ("an empty folder", {}, "has no class sub-folders"),
    ("a class folder without images", {**SPLIT, "test/c3/notes.txt": b"no images"},
     "has no images"),
    ("a corrupt image", {**SPLIT, "train/c0/4.png": b"not a png"},
     "cannot read image"),
    ("an empty image file", {**SPLIT, "test/c1/4.png": b""}, "Input is empty"),
    ("a class of too few images for shots + query_shots", {**SPLIT, "test/c2": 2},
     "shots + query_shots = 3 exceeds the examples of 1 class(es) of the test split "
     "(class 'c2' has 2)"),
    ("fewer classes than --train_ways",
     {k: n for k, n in SPLIT.items() if k not in ("train/c4", "train/c5")},
     "ways=5 exceeds the 4 classes of the train split"),
    ("one class folder, nothing to split", {"c0": 4}, "too few to split"),
]


@pytest.mark.parametrize("layout,message", [r[1:] for r in BAD_FOLDERS],
                         ids=[r[0] for r in BAD_FOLDERS])
def test_bad_image_folders_fail_with_one_line_and_leave_nothing(tmp_path, layout, message):
    write_images(tmp_path / "data", layout)
    os.makedirs(tmp_path / "data", exist_ok=True)
    before = tree(tmp_path)
    with pytest.raises(ValueError) as raised:
        experiment.train_and_evaluate(
            tiny(tmp_path, dataset="folder", data_dir=str(tmp_path / "data"),
                 train_query_shots=2), str(tmp_path / "run"))
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert tree(tmp_path) == before


def test_a_folder_run_trains_on_your_images(tmp_path):
    write_images(tmp_path / "data", SPLIT)
    result = experiment.train_and_evaluate(
        tiny(tmp_path, dataset="folder", data_dir=str(tmp_path / "data"), train_query_shots=2,
             export_dir=""), str(tmp_path / "run"))
    assert result.scores["episodes"] == 6


def test_the_same_seed_gives_the_same_run(tmp_path):
    first, second = (experiment.train_and_evaluate(tiny(tmp_path, export_dir=""),
                                                   str(tmp_path / run)) for run in "ab")
    assert first.scores["accuracy"] == second.scores["accuracy"]
    assert first.scores["ci95"] == second.scores["ci95"]


def test_export_adapted_from_a_folder_of_support_images(tmp_path):
    write_images(tmp_path / "support", {f"class{c}": 2 for c in range(3)}, size=28)
    result = experiment.train_and_evaluate(
        tiny(tmp_path, algo="maml", export_adapted=str(tmp_path / "support"),
             meta_batch_size=2, train_query_shots=2, test_inner_steps=1),
        str(tmp_path / "run"))
    meta = json.loads((tmp_path / "export_adapted" / "1" / "assets.extra" /
                       "tf_meta.json").read_text())
    assert meta["support"] == str(tmp_path / "support")
    served = tf.saved_model.load(result.adapted_export).signatures["serving_default"]
    assert served(images=tf.zeros([2, 28, 28, 1]))["probabilities"].shape == (2, 3)


def test_omniglot_shots_beyond_20_examples_per_class_fail_before_training(tmp_path,
                                                                          omniglot_splits):
    with pytest.raises(ValueError, match="shots \\+ query_shots = 21 exceeds the examples of"):
        experiment.train_and_evaluate(RunConfig(shots=6, query_shots=15,
                                                export_dir=str(tmp_path / "export")),
                                      str(tmp_path / "run"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "export").exists()


def test_missing_omniglot_is_a_one_line_error_saying_what_to_set(tmp_path):
    with pytest.raises(ValueError) as raised:
        experiment.train_and_evaluate(RunConfig(download=False, data_dir=str(tmp_path / "e"),
                                                export_dir=""), str(tmp_path / "run"))
    assert "set TFDS_DATA_DIR" in str(raised.value) and "\n" not in str(raised.value)
