"""train.py end to end: a tiny run leaves its artefacts; bad flags fail fast and leave none."""

import concurrent.futures
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT

TINY = ["--dataset=synthetic", "--steps=4", "--eval_every=2", "--train_ways=5", "--ways=3",
        "--query_shots=2", "--val_episodes=4", "--eval_episodes=6"]


# TensorFlow's native start-up log ("I0000 00:00:... port.cc:153] oneDNN ...") and absl's hint
# after a flag error are not train.py's own output.
FOREIGN = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|Pass --helpshort)")


def own_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip() and not FOREIGN.match(line)]


def run_train(args, tmp_path, env=None):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300, env=env or dict(os.environ))


def test_tiny_run_writes_flags_checkpoint_results_and_a_servable_export(tmp_path):
    model_dir, export_dir = tmp_path / "run", tmp_path / "saved_models" / "protonet"
    done = run_train(TINY + [f"--model_dir={model_dir}", f"--export_dir={export_dir}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test accuracy 3-way 1-shot:" in done.stdout and "95% CI, 6 episodes" in done.stdout
    assert (model_dir / "checkpoints" / "checkpoint").is_file()  # tf.train.CheckpointManager
    assert os.listdir(model_dir / "logs")  # TensorBoard event files
    flags_txt = (model_dir / "flags.txt").read_text()
    assert "--dataset=synthetic" in flags_txt and "--steps=4" in flags_txt
    result = json.loads((model_dir / "test_3way_1shot.json").read_text())
    assert result["episodes"] == 6 and 0 <= result["accuracy"] <= 1 and result["ci95"] >= 0
    assert (export_dir / "1" / "saved_model.pb").is_file()

    # --flagfile replays the run's flags; --eval_only restores its checkpoint.
    again = run_train([f"--flagfile={model_dir / 'flags.txt'}", "--eval_only", "--ways=4"],
                      tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((model_dir / "test_4way_1shot.json").read_text())["episodes"] == 6
    assert sorted(os.listdir(export_dir)) == ["1", "2"]


BAD_FLAGS = [
    (["--algo=nope"], "value should be one of"),
    (["--dataset=nope"], "value should be one of"),
    (["--steps=0"], "--steps=0"),
    (["--steps=-3"], "--steps=-3"),
    (["--meta_lr=0"], "--meta_lr must be positive"),
    (["--meta_lr=-0.1"], "--meta_lr must be positive"),
    (["--ways=0"], "--ways=0"),
    (["--ways=21"], "ways=21 exceeds the 20 classes of the val split"),
    (["--train_ways=61"], "ways=61 exceeds the 60 classes of the train split"),
    (["--shots=10", "--query_shots=11"], "shots + query_shots = 21 exceeds"),
    (["--steps=5"], "--steps=5 is not a multiple of --eval_every=2"),
    (["--dataset=folder", "--data_dir=/does/not/exist"], "does not exist"),
    (["unexpected"], "unexpected arguments"),
    (["--inner_lr=0.1"], "--inner_lr does not apply to --algo=protonet"),
    (["--algo=maml", "--ways=5", "--train_ways=3"], "--ways=5 exceeds the 3-way head"),
    (["--algo=reptile", "--ways=5", "--train_ways=3"], "--ways=5 exceeds the 3-way head"),
    (["--algo=protonet", "--dataset=sinusoid"], "--dataset=sinusoid supports --algo in"),
    (["--algo=maml", "--inner_lr=0"], "--inner_lr must be positive"),
    (["--algo=reptile", "--inner_steps=0"], "with 0 inner steps θ never moves"),
    (["--algo=maml", "--inner_steps=-1"], "--inner_steps"),
    (["--algo=relationnet", "--inner_steps=1"], "--inner_steps does not apply"),
    (["--algo=snail", "--ways=6", "--train_ways=5"], "--ways=6 exceeds the 5-way head"),
    (["--algo=mann", "--usage_decay=1.5"], "--usage_decay must be in (0, 1]"),
    (["--algo=reptile", "--parallel_tasks=2"], "--parallel_tasks does not apply"),
    (["--meta_lr=inf"], "--meta_lr must be positive and finite"),
    (["--algo=maml", "--inner_lr=-1"], "--inner_lr must be positive"),
    (["--lr_decay_rate=0"], "--lr_decay_rate must be positive"),
    (["--eval_every=0"], "--eval_every=0"),
    (["--nope=1"], "Unknown command line flag 'nope'"),
    (["--flagfile={tmp}/missing.txt"], "missing.txt"),
    (["--dataset=folder"], "--dataset=folder needs --data_dir"),
    (["--eval_only"], "--eval_only needs a trained run in --model_dir="),
    (["--export_adapted=test_episode"], "--export_adapted needs an algorithm with an inner loop"),
    (["--algo=maml", "--export_adapted=test_episode", "--export_dir="], "it needs --export_dir"),
    (["--algo=maml", "--export_adapted={tmp}/missing"], "does not exist"),
    (["--algo=maml", "--dataset=sinusoid", "--export_adapted={tmp}/support"],
     "needs an image dataset"),
    (["--algo=maml", "--export_adapted={tmp}/support"], "has 6 classes, more than the 5-way head"),
    (["--model_dir={tmp}/a_file/run"], "is not a folder"),
    (["--export_dir={tmp}/a_file/export"], "is not a folder"),
    (["--export_dir={tmp}/a_file"], "is not a folder"),
    (["--algo=maml", "--export_adapted=test_episode", "--export_dir={tmp}/a_file_adapted/m"],
     "is not a folder"),
    (["--checkpoint_every=3"], "--checkpoint_every=3 does not divide --eval_every=2"),
    (["--strategy=multi_worker"], "--strategy=multi_worker needs TF_CONFIG"),
    (["--strategy=mirrored", "--cpu_replicas=2", "--meta_batch_size=3"],
     "--meta_batch_size=3 does not split evenly over the 2 replicas"),
]


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_one_line_error_and_nothing_written(done, message, tmp_path, before):
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = own_lines(done.stderr)
    assert len(lines) == 1 and message in lines[0], done.stderr[-2000:]
    assert lines[0].startswith("train.py: error: ")
    assert tree(tmp_path) == before  # no model dir, no export version, no flags.txt


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """flags -> (train.py's CompletedProcess, its folder, the folder's files before the run).

    Each row is its own train.py process (a fresh interpreter is the honest check of exit
    code and stderr); they run two at a time, as most of their time is importing TF.
    """
    def run(flags):
        folder = tmp_path_factory.mktemp("bad_flags")
        (folder / "a_file").write_text("a file where a folder should be")
        (folder / "a_file_adapted").write_text("a file where a folder should be")
        write_folder(folder / "support", {f"c{c}": 2 for c in range(6)})
        before = tree(folder)
        done = run_train(TINY + [f"--model_dir={folder / 'run'}",
                                 f"--export_dir={folder / 'export'}"]
                         + [f.format(tmp=folder) for f in flags], folder)
        return tuple(flags), (done, folder, before)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, [flags for flags, _ in BAD_FLAGS]))


@pytest.mark.parametrize("flags,message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flags_fail_with_one_line_and_leave_nothing(bad_flag_runs, flags, message):
    done, folder, before = bad_flag_runs[tuple(flags)]
    assert_one_line_error_and_nothing_written(done, message, folder, before)


def write_folder(root, layout):
    """layout: {class folder: number of PNGs, or file path: its bytes}, relative to root."""
    os.makedirs(root, exist_ok=True)
    for path, content in layout.items():
        if isinstance(content, bytes):
            os.makedirs((root / path).parent, exist_ok=True)
            (root / path).write_bytes(content)
            continue
        os.makedirs(root / path, exist_ok=True)
        for i in range(content):
            pixels = np.full((12, 12, 1), 20 * i, np.uint8)
            (root / path / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())


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
    write_folder(tmp_path / "data", layout)
    before = tree(tmp_path)
    done = run_train(TINY + ["--dataset=folder", f"--data_dir={tmp_path / 'data'}",
                             "--train_query_shots=2", f"--model_dir={tmp_path / 'run'}",
                             f"--export_dir={tmp_path / 'export'}"], tmp_path)
    assert_one_line_error_and_nothing_written(done, message, tmp_path, before)


def test_omniglot_shots_beyond_20_examples_per_class_fail_before_training(tmp_path):
    done = run_train(["--shots=6", "--query_shots=15", f"--model_dir={tmp_path / 'run'}",
                      f"--export_dir={tmp_path / 'export'}"], tmp_path)
    lines = own_lines(done.stderr)
    assert done.returncode != 0 and len(lines) == 1, done.stderr[-2000:]
    assert "shots + query_shots = 21 exceeds the examples of" in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "export").exists()


def test_missing_omniglot_is_a_one_line_error_saying_what_to_set(tmp_path):
    env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "empty"))
    done = run_train(["--nodownload", f"--model_dir={tmp_path / 'run'}"], tmp_path, env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = own_lines(done.stderr)
    assert len(lines) == 1 and "set TFDS_DATA_DIR" in lines[0], done.stderr[-2000:]


def test_the_same_seed_gives_the_same_run(tmp_path):
    results = []
    for run in ("a", "b"):
        done = run_train(TINY + [f"--model_dir={tmp_path / run}", "--export_dir="], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(json.loads((tmp_path / run / "test_3way_1shot.json").read_text()))
    assert results[0]["accuracy"] == results[1]["accuracy"]
    assert results[0]["ci95"] == results[1]["ci95"]


def test_sinusoid_maml_trains_evaluates_and_exports_predictions(tmp_path):
    done = run_train(["--algo=maml", "--dataset=sinusoid", "--steps=4", "--eval_every=2",
                      "--val_episodes=4", "--eval_episodes=6", "--export_adapted=test_episode",
                      f"--model_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'maml'}"],
                     tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test MSE sinusoid 5-shot:" in done.stdout
    result = json.loads((tmp_path / "run" / "test_sinusoid_5shot.json").read_text())
    assert result["test_inner_steps"] == 10 and result["inner_lr"] == 0.01  # the paper's
    assert (tmp_path / "maml" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "maml_adapted" / "1" / "saved_model.pb").is_file()


def test_export_adapted_from_a_folder_of_support_images(tmp_path):
    import numpy as np
    import tensorflow as tf
    for c in range(3):
        os.makedirs(tmp_path / "support" / f"class{c}")
        for i in range(2):
            pixels = np.full((28, 28, 1), 40 * c + 10 * i, np.uint8)
            tf.io.write_file(str(tmp_path / "support" / f"class{c}" / f"{i}.png"),
                             tf.io.encode_png(pixels))
    done = run_train(TINY + ["--algo=maml", f"--export_adapted={tmp_path / 'support'}",
                             f"--model_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'm'}"],
                     tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((tmp_path / "m_adapted" / "1" / "assets.extra" / "tf_meta.json").read_text())
    assert meta["support"] == str(tmp_path / "support")
