"""Writes the legacy fixtures that tests/test_legacy.py loads with the current code.

The fixtures freeze what tf_meta wrote to disk BEFORE the run-config / experiment-module
refactor, so the test proves that run folders and exports written by that code still load.
They were generated from commit aabe6ea2d69d1ceb17184b553139577db050aeaf (see
MANIFEST.json, which records the commit and library versions of the last generation).

Run it against an OLD checkout, never the current tree (the point is that the files come
from the old code):

    git worktree add --detach /tmp/legacy_src aabe6ea2d69d1ceb17184b553139577db050aeaf
    cd /tmp && PYTHONPATH=/tmp/legacy_src /work/main/.venv/bin/python \\
        /work/main/tests/data/legacy/make_fixtures.py
    git -C /work/main worktree remove --force /tmp/legacy_src

or, from the repository root, `PYTHONPATH=<old checkout> .venv/bin/python
tests/data/legacy/make_fixtures.py`. Options: --out DIR, --algos a,b,..., --no-cli.

(PYTHONPATH wins over the venv's editable install of the current tree; the script prints
and records which tf_meta it imported and refuses one inside the output folder's repo
unless --allow-current is given.)

What it writes into --out (default: this file's folder), every folder first deleted:
  <algo>/hyper.json      the constructor keyword arguments of build_learner(algo, (8,), ways=3)
  <algo>/checkpoints/    tf_meta.training.fit's checkpoint after 4 steps (fit keeps steps 2
                         and 4; the step-2 one is deleted and the `checkpoint` index file
                         rewritten to list ckpt-4 alone, to stay within the size budget)
  <algo>/export/1/       tf_meta.export.export_learner's SavedModel (its empty assets/ folder
                         removed, as a git clone would not have it)
  <algo>/expected.npz    a fixed evaluation meta-batch (support_x, support_y, query_x,
                         query_y: 2 episodes, 3-way 2-shot, 2 queries per class) and the
                         trained learner's in-memory predict_step logits [2, 6, 3]
  cli_run/               a protonet run folder of train.py (flags.txt, checkpoints/,
                         test_3way_1shot.json); its TensorBoard logs/ are deleted (not read
                         by anything that loads a run folder). --model_dir in its flags.txt
                         is the absolute path it was written to: a replay must override it
  MANIFEST.json          commit, library versions, the episode specs used

SNAIL is not written by default: its fixed-width SnailNet holds >= 1.0 M float32
parameters even with sequence_length=2, the smallest (4 MB per copy of the weights; its
fixture is 20 MB: a 12 MB checkpoint with the Adam slots and an 8 MB export, Keras's
ExportArchive storing every variable twice), far over the 3 MB budget of this folder.
`--algos=snail --no-cli --out=DIR` writes it (MANIFEST.json of DIR then lists snail);
test_legacy.py tests snail whenever tests/data/legacy/snail exists, and skips it otherwise.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

INPUT_SHAPE = (8,)
WAYS = 3
# Hyperparameters shrunk so the fixtures stay small and fast (passed to build_learner).
HYPER = {
    "protonet": {},
    "maml": {"inner_lr": 0.05, "test_inner_steps": 1},
    "fomaml": {"inner_lr": 0.05, "test_inner_steps": 1},
    "reptile": {"inner_lr": 0.01, "test_inner_steps": 2},
    "relationnet": {},
    "mann": {"controller_units": 16, "memory_slots": 8, "memory_width": 8, "read_heads": 1},
    "snail": {"sequence_length": 2},
}
DEFAULT_ALGOS = ["protonet", "maml", "fomaml", "reptile", "relationnet", "mann"]
META_LR = {"reptile": 0.1}  # others: 1e-3
TRAIN = dict(steps=4, checkpoint_every=2, eval_every=2)
OPTIMIZER = dict(steps=100, decay_every=100, decay_rate=1.0)
SOURCE = dict(num_classes=20, examples_per_class=10, input_shape=INPUT_SHAPE)  # data.synthetic
TRAIN_EPISODES = dict(ways=3, shots=2, query_shots=2, meta_batch_size=2, seed=0)
EVAL_EPISODES = dict(ways=3, shots=2, query_shots=2, meta_batch_size=2, seed=7, num_episodes=2)
CLI_FLAGS = ["--dataset=synthetic", "--steps=2", "--eval_every=2", "--train_ways=5",
             "--ways=3", "--query_shots=2", "--val_episodes=4", "--eval_episodes=6"]


def git(directory, *args):
    try:
        return subprocess.run(["git", "-C", str(directory), *args], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def keep_newest_checkpoint(directory):
    """Deletes every checkpoint but the newest and rewrites the `checkpoint` index to match.

    The index keeps TensorFlow's own format (relative paths, the original timestamps), as
    tf.train.CheckpointManager would have written it with max_to_keep=1.
    """
    import tensorflow as tf

    directory = pathlib.Path(directory)
    state = tf.train.get_checkpoint_state(str(directory))
    newest = pathlib.Path(state.model_checkpoint_path).name
    paths = [pathlib.Path(p).name for p in state.all_model_checkpoint_paths]
    timestamps = dict(zip(paths, state.all_model_checkpoint_timestamps))
    for name in paths:
        if name != newest:
            for f in directory.glob(f"{name}.*"):
                f.unlink()
    tf.compat.v1.train.update_checkpoint_state(
        str(directory), newest, all_model_checkpoint_paths=[newest],
        all_model_checkpoint_timestamps=[timestamps[newest]],
        last_preserved_timestamp=state.last_preserved_timestamp)
    assert tf.train.latest_checkpoint(str(directory)) == str(directory / newest)


def remove_empty_folders(root):
    """Deletes the SavedModel's empty assets/ folder: git cannot hold an empty folder, so a
    clone would not have it, and the fixture should load exactly as a clone holds it."""
    for directory, _, _ in sorted(os.walk(root), reverse=True):
        if not os.listdir(directory):
            os.rmdir(directory)


def make_algo(algo, out):
    import keras
    import tensorflow as tf

    import tf_meta
    from tf_meta import data, export, training

    folder = out / algo
    shutil.rmtree(folder, ignore_errors=True)  # fit would resume from old checkpoints
    folder.mkdir(parents=True)
    hyper = HYPER[algo]
    (folder / "hyper.json").write_text(json.dumps(hyper, indent=2, sort_keys=True) + "\n")

    keras.utils.set_random_seed(0)
    learner = tf_meta.build_learner(algo, INPUT_SHAPE, ways=WAYS, **hyper)
    learner.compile(optimizer=learner.meta_optimizer(META_LR.get(algo, 1e-3), **OPTIMIZER),
                    jit_compile=False)
    source = data.synthetic(**SOURCE)

    def stream(start):
        return data.make_episode_dataset(source, **TRAIN_EPISODES, start=start)

    training.fit(learner, stream, str(folder / "checkpoints"), **TRAIN)
    keep_newest_checkpoint(folder / "checkpoints")
    path = export.export_learner(learner, str(folder / "export"), INPUT_SHAPE)
    assert os.path.basename(path) == "1", path
    remove_empty_folders(path)

    episodes = next(iter(data.make_episode_dataset(source, **EVAL_EPISODES)))
    logits = learner.predict_step(episodes).numpy()
    assert logits.shape == (2, 6, WAYS), logits.shape
    np.savez(folder / "expected.npz", **{k: np.asarray(v) for k, v in
                                         episodes._asdict().items()}, logits=logits)

    # Self-checks, so a fixture that the test could never pass is not written silently.
    fresh = tf_meta.build_learner(algo, INPUT_SHAPE, ways=WAYS, **hyper)
    assert training.restore_for_evaluation(fresh, str(folder / "checkpoints")) == 4
    np.testing.assert_allclose(fresh.predict_step(episodes).numpy(), logits,
                               rtol=1e-5, atol=1e-5)
    served = tf.saved_model.load(path).signatures["serving_default"](
        support_images=tf.cast(episodes.support_x[0], tf.float32),
        support_labels=tf.cast(episodes.support_y[0], tf.int32),
        query_images=tf.cast(episodes.query_x[0], tf.float32))
    np.testing.assert_allclose(served["logits"].numpy(), logits[0], rtol=1e-5, atol=1e-5)
    print(f"{algo}: logits[0, 0] = {logits[0, 0]}")


def make_cli_run(out, legacy_root):
    run = out / "cli_run"
    shutil.rmtree(run, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(legacy_root))
    subprocess.run([sys.executable, str(legacy_root / "train.py"), *CLI_FLAGS,
                    f"--model_dir={run}", "--export_dir="],
                   check=True, env=env, cwd=str(out))
    shutil.rmtree(run / "logs", ignore_errors=True)
    keep_newest_checkpoint(run / "checkpoints")  # --steps=2: there is only one anyway
    for name in ("flags.txt", "test_3way_1shot.json", "checkpoints/checkpoint"):
        assert (run / name).is_file(), name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    parser.add_argument("--algos", default=",".join(DEFAULT_ALGOS),
                        help=f"comma-separated, from {sorted(HYPER)}")
    parser.add_argument("--no-cli", action="store_true", help="skip the train.py run folder")
    parser.add_argument("--allow-current", action="store_true",
                        help="allow a tf_meta from the repository the output folder is in")
    args = parser.parse_args()
    out = args.out.resolve()

    import keras
    import tensorflow as tf

    import tf_meta

    legacy_root = pathlib.Path(tf_meta.__file__).resolve().parents[1]
    print(f"tf_meta from {legacy_root}")
    if (git(legacy_root, "rev-parse", "--show-toplevel")
            == git(out, "rev-parse", "--show-toplevel") and not args.allow_current):
        sys.exit(f"tf_meta is imported from {legacy_root}, the repository the fixtures go to: "
                 "run with PYTHONPATH=<old checkout> (or --allow-current)")
    algos = [a for a in args.algos.split(",") if a]
    unknown = sorted(set(algos) - set(HYPER))
    if unknown:
        sys.exit(f"unknown algos {unknown}; choose from {sorted(HYPER)}")

    out.mkdir(parents=True, exist_ok=True)
    for algo in algos:
        make_algo(algo, out)
    if not args.no_cli:
        make_cli_run(out, legacy_root)

    manifest = {
        "commit": git(legacy_root, "rev-parse", "HEAD"),
        "uncommitted_changes": bool(git(legacy_root, "status", "--porcelain", "--", "tf_meta",
                                        "train.py")),
        "tf_meta_version": tf_meta.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "algos": sorted(p.name for p in out.iterdir() if (p / "hyper.json").is_file()),
        "input_shape": list(INPUT_SHAPE),
        "ways": WAYS,
        "source": {**SOURCE, "input_shape": list(INPUT_SHAPE)},
        "train_episodes": TRAIN_EPISODES,
        "eval_episodes": EVAL_EPISODES,
        "train": TRAIN,
        "optimizer": {**OPTIMIZER, "meta_lr": {a: META_LR.get(a, 1e-3) for a in HYPER}},
        "cli_flags": CLI_FLAGS + ["--model_dir=<out>/cli_run", "--export_dir="],
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
