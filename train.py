"""Meta-trains a tf_meta learner, evaluates it on fixed test episodes, exports it for TF Serving.

Intentionally short: flags in, library calls out. The library never reads FLAGS.

  python train.py --algo=protonet                 # Omniglot, vinyals split, paper protocol
  python train.py --flagfile=runs/protonet/flags.txt --ways=20 --eval_only
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep TF's start-up chatter out of the log

from absl import app, flags, logging  # noqa: E402

import tf_meta  # noqa: E402
from tf_meta import data, evaluation, export  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("algo", "protonet", sorted(tf_meta.ALGORITHMS), "meta-learning algorithm")
flags.DEFINE_enum("dataset", "omniglot", ["omniglot", "folder", "synthetic"],
                  "episode source: TFDS omniglot, an image folder (--data_dir), or synthetic")
flags.DEFINE_enum("split", "vinyals", list(data.sources.SPLIT_SCHEMES), "Omniglot class split")
flags.DEFINE_string("data_dir", None, "TFDS data dir for omniglot (default: TFDS_DATA_DIR or "
                    "~/tensorflow_datasets); the image root for --dataset=folder")
flags.DEFINE_bool("download", True, "let TFDS download omniglot when it is not prepared")
flags.DEFINE_integer("ways", 5, "test classes per episode (N in N-way)", lower_bound=1)
flags.DEFINE_integer("shots", 1, "support examples per class (K in K-shot)", lower_bound=1)
flags.DEFINE_integer("query_shots", 15, "query examples per class in test episodes",
                     lower_bound=1)
flags.DEFINE_integer("train_ways", 60, "classes per training episode (paper: 60)", lower_bound=1)
flags.DEFINE_integer("train_shots", None, "support examples per class in training episodes "
                     "(default: --shots)", lower_bound=1)
flags.DEFINE_integer("train_query_shots", 5, "query examples per class in training episodes",
                     lower_bound=1)
flags.DEFINE_integer("meta_batch_size", 1, "episodes per meta-update", lower_bound=1)
flags.DEFINE_integer("steps", 10000, "meta-updates to train", lower_bound=1)
flags.DEFINE_float("meta_lr", 1e-3, "Adam learning rate of the meta-update")
flags.DEFINE_integer("lr_decay_every", 2000, "halve (--lr_decay_rate) the rate every this many "
                     "steps (paper: 2000)", lower_bound=1)
flags.DEFINE_float("lr_decay_rate", 0.5, "multiplier of the rate every --lr_decay_every steps")
flags.DEFINE_integer("eval_every", 500, "steps between validation runs and checkpoints",
                     lower_bound=1)
flags.DEFINE_integer("val_episodes", 200, "validation episodes per validation run", lower_bound=2)
flags.DEFINE_integer("eval_episodes", 1000, "fixed test episodes for the final accuracy ± CI",
                     lower_bound=2)
flags.DEFINE_integer("seed", 0, "seed of initialisation and training episodes")
flags.DEFINE_integer("eval_seed", 1000, "seed of the fixed validation and test episode sets")
flags.DEFINE_string("model_dir", "runs/protonet", "checkpoints, TensorBoard logs, flags.txt, "
                    "results JSON")
flags.DEFINE_string("export_dir", "saved_models/protonet", "TF Serving model base path; a new "
                    "integer version is written there ('' skips the export)")
flags.DEFINE_bool("eval_only", False, "skip training: restore model_dir's checkpoint, evaluate")
for _rate in ("meta_lr", "lr_decay_rate"):
    flags.register_validator(_rate, lambda v: v > 0, message=f"--{_rate} must be positive")


def load_splits():
    """dict split -> data.Source for --dataset."""
    if FLAGS.dataset == "omniglot":
        return data.omniglot(FLAGS.split, data_dir=FLAGS.data_dir, download=FLAGS.download)
    if FLAGS.dataset == "folder":
        if not FLAGS.data_dir:
            raise ValueError("--dataset=folder needs --data_dir")
        return data.folder_splits(FLAGS.data_dir, seed=FLAGS.seed)
    return data.synthetic_splits(num_classes=100, input_shape=(28, 28, 1), seed=FLAGS.seed)


def prepare():
    """Everything that can fail on bad input, before any training or export."""
    for path in (FLAGS.model_dir, FLAGS.export_dir):
        if path and os.path.exists(path) and not os.access(path, os.W_OK):
            raise ValueError(f"{path!r} is not writable")
    if FLAGS.steps % min(FLAGS.eval_every, FLAGS.steps):
        raise ValueError(f"--steps={FLAGS.steps} is not a multiple of "
                         f"--eval_every={FLAGS.eval_every}")
    splits = load_splits()
    shots = FLAGS.train_shots or FLAGS.shots
    train = data.make_episode_dataset(splits["train"], FLAGS.train_ways, shots,
                                      FLAGS.train_query_shots, FLAGS.meta_batch_size,
                                      FLAGS.seed, split="train")
    episodes = dict(ways=FLAGS.ways, shots=FLAGS.shots, query_shots=FLAGS.query_shots,
                    meta_batch_size=50, seed=FLAGS.eval_seed)
    val = (data.make_episode_dataset(splits["val"], **episodes, split="val",
                                     num_episodes=FLAGS.val_episodes)
           if "val" in splits else None)
    test = data.make_episode_dataset(splits["test"], **episodes, split="test",
                                     num_episodes=FLAGS.eval_episodes)
    learner = tf_meta.build_learner(FLAGS.algo, splits["train"].input_shape)
    return learner, train, val, test, splits["train"].input_shape


def main(argv):
    if len(argv) > 1:
        sys.exit(f"train.py: error: unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        learner, train, val, test, input_shape = prepare()
        os.makedirs(FLAGS.model_dir, exist_ok=True)
    except (ValueError, OSError) as e:
        sys.exit(f"train.py: error: {e}")
    import keras
    keras.utils.set_random_seed(FLAGS.seed)
    with open(os.path.join(FLAGS.model_dir, "flags.txt"), "w") as f:
        f.write(FLAGS.flags_into_string())
    checkpoint = os.path.join(FLAGS.model_dir, "checkpoints", "last.weights.h5")
    start = time.time()
    if FLAGS.eval_only:
        learner.load_weights(checkpoint)
    else:
        schedule = keras.optimizers.schedules.ExponentialDecay(
            FLAGS.meta_lr, FLAGS.lr_decay_every, FLAGS.lr_decay_rate, staircase=True)
        learner.compile(optimizer=keras.optimizers.Adam(schedule), jit_compile=False)
        steps_per_epoch = min(FLAGS.eval_every, FLAGS.steps)
        learner.fit(train, steps_per_epoch=steps_per_epoch,
                    epochs=FLAGS.steps // steps_per_epoch, validation_data=val,
                    callbacks=[
                        keras.callbacks.BackupAndRestore(os.path.join(FLAGS.model_dir, "backup")),
                        keras.callbacks.ModelCheckpoint(checkpoint, save_weights_only=True),
                        keras.callbacks.TensorBoard(os.path.join(FLAGS.model_dir, "logs"))])
    train_seconds = time.time() - start
    result = evaluation.evaluate_episodes(learner, test)
    result.update(algo=FLAGS.algo, dataset=FLAGS.dataset, split=FLAGS.split, ways=FLAGS.ways,
                  shots=FLAGS.shots, query_shots=FLAGS.query_shots, steps=FLAGS.steps,
                  train_seconds=round(train_seconds, 1))
    name = f"test_{FLAGS.ways}way_{FLAGS.shots}shot.json"
    with open(os.path.join(FLAGS.model_dir, name), "w") as f:
        json.dump(result, f, indent=2)
    print(f"test accuracy {FLAGS.ways}-way {FLAGS.shots}-shot: {100 * result['accuracy']:.2f} "
          f"± {100 * result['ci95']:.2f}% (95% CI, {result['episodes']} episodes)")
    if FLAGS.export_dir:
        path = export.export_learner(learner, FLAGS.export_dir, input_shape,
                                     metadata={"algo": FLAGS.algo, "test": result})
        print(f"exported SavedModel to {path}")


if __name__ == "__main__":
    app.run(main)
