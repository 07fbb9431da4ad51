"""Meta-trains a tf_meta learner, evaluates it on fixed test episodes, exports it for TF Serving.

Intentionally short: flags in, library calls out; the library never reads FLAGS. Flags left
unset take the algorithm's published protocol (tf_meta/protocols.py).

  python train.py --algo=protonet                 # Omniglot, vinyals split, paper protocol
  python train.py --algo=maml --steps=2000        # 5-way 1-shot MAML, exact second order
  python train.py --flagfile=runs/protonet/flags.txt --ways=20 --eval_only
"""

import functools
import inspect
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep TF's start-up chatter out of the log

from absl import app, flags, logging  # noqa: E402

import tf_meta  # noqa: E402
from tf_meta import backbones, data, evaluation, export, protocols, training  # noqa: E402
from tf_meta.algorithms import mann  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("algo", "protonet", sorted(tf_meta.ALGORITHMS), "meta-learning algorithm")
flags.DEFINE_enum("dataset", "omniglot", ["omniglot", "folder", "synthetic", "sinusoid"],
                  "episode source: TFDS omniglot, an image folder (--data_dir), synthetic "
                  "clusters, or sinusoid regression (MAML paper §5.1)")
flags.DEFINE_enum("split", "vinyals", list(data.sources.SPLIT_SCHEMES), "Omniglot class split")
flags.DEFINE_string("data_dir", None, "TFDS data dir for omniglot (default: TFDS_DATA_DIR or "
                    "~/tensorflow_datasets); the image root for --dataset=folder")
flags.DEFINE_bool("download", True, "let TFDS download omniglot when it is not prepared")
PROTOCOL = "(default: the algorithm's paper protocol, tf_meta/protocols.py)"
for name, help_text in [
        ("ways", "test classes per episode (N in N-way)"),
        ("shots", "support examples per class in test episodes (K in K-shot)"),
        ("query_shots", "query examples per class in test episodes"),
        ("train_ways", "classes per training episode (default: --ways; ProtoNet: 60)"),
        ("train_shots", "support examples per class in training episodes (default: --shots)"),
        ("train_query_shots", "query examples per class in training episodes"),
        ("meta_batch_size", "episodes per meta-update"),
        ("steps", "meta-updates to train"),
        ("lr_decay_every", "multiply the meta learning rate by --lr_decay_rate this often"),
        ("inner_batch_size", "support examples per Reptile inner step in training"),
        ("test_inner_batch_size", "support examples per Reptile inner step at test")]:
    flags.DEFINE_integer(name, None, f"{help_text} {PROTOCOL}", lower_bound=1)
for name, help_text in [
        ("inner_steps", "inner-loop steps in training (MAML, Reptile); MAML with 0 trains the "
         "pretrained-on-all-tasks baseline"),
        ("test_inner_steps", "inner-loop steps at test and in the served model (MAML, Reptile)")]:
    flags.DEFINE_integer(name, None, f"{help_text} {PROTOCOL}", lower_bound=0)
flags.DEFINE_integer("parallel_tasks", None, "MAML/FOMAML: tasks whose meta-gradients run at "
                     "once (2 is ~20% faster on 2 cores, ~100 MB more memory; default 1)",
                     lower_bound=1)
for name, help_text in [("meta_lr", "outer learning rate (Reptile: ε, annealed to 0)"),
                        ("lr_decay_rate", "learning-rate multiplier every --lr_decay_every"),
                        ("inner_lr", "inner-loop learning rate (MAML, Reptile)")]:
    flags.DEFINE_float(name, None, f"{help_text} {PROTOCOL}")
    flags.register_validator(name, lambda v: v is None or 0 < v < math.inf,
                             message=f"--{name} must be positive and finite")
for name, help_text, low in [
        ("controller_units", "MANN: LSTM controller units", 1),
        ("memory_slots", "MANN: memory rows", 1),
        ("memory_width", "MANN: width of a memory row", 1),
        ("read_heads", "MANN: read heads (each also writes)", 1),
        ("sequence_length", "SNAIL: sequence length T its TC blocks cover, ceil(log2 T) dense "
         "blocks each; the protocol's is train_ways x train_shots + 1", 2)]:
    flags.DEFINE_integer(name, None, f"{help_text} {PROTOCOL}", lower_bound=low)
flags.DEFINE_float("label_scale", None, "SNAIL: the value of a support label's one-hot entry "
                   "(default: √D, D the embedding width; 1 before this flag existed)")
flags.register_validator("label_scale", lambda v: v is None or v > 0,
                         message="--label_scale must be positive")
flags.DEFINE_float("usage_decay", None, f"MANN: memory usage decay γ {PROTOCOL}")
flags.register_validator("usage_decay", lambda v: v is None or 0 < v <= 1,
                         message="--usage_decay must be in (0, 1]")
flags.DEFINE_float("key_strength", None, "MANN: β of its reads, softmax(β·cosine); 1 is the "
                  f"paper's {PROTOCOL}")
flags.register_validator("key_strength", lambda v: v is None or v > 0,
                         message="--key_strength must be positive")
flags.DEFINE_bool("transductive", True, "BatchNorm statistics from the whole query batch at "
                  "test (MAML, Reptile, RelationNet); --notransductive: see each algorithm's "
                  "docstring")
flags.DEFINE_integer("eval_every", 500, "steps between validation runs", lower_bound=1)
flags.DEFINE_integer("checkpoint_every", None, "steps between checkpoints; a killed run restarted "
                     "with the same command resumes from the last one (default: the largest "
                     "divisor of --eval_every up to 100)", lower_bound=1)
flags.DEFINE_integer("val_episodes", 200, "validation episodes per validation run", lower_bound=2)
flags.DEFINE_integer("eval_episodes", 1000, "fixed test episodes for the final score ± CI",
                     lower_bound=2)
flags.DEFINE_integer("seed", 0, "seed of initialisation and training episodes")
flags.DEFINE_integer("eval_seed", 1000, "seed of the fixed validation and test episode sets")
flags.DEFINE_string("model_dir", None, "checkpoints, TensorBoard logs, flags.txt, results JSON "
                    "(default: runs/<algo>)")
flags.DEFINE_string("export_dir", None, "TF Serving model base path, a new integer version is "
                    "written there (default: saved_models/<algo>; '' skips the export)")
flags.DEFINE_string("export_adapted", None, "also export the learner adapted to one support "
                    "set (a folder of class folders, or 'test_episode') as a plain classifier "
                    "to <export_dir>_adapted")
flags.DEFINE_enum("strategy", "default", list(training.STRATEGIES), "tf.distribute strategy: the "
                  "meta-batch's tasks split across replicas, meta-gradients all-reduced "
                  "(multi_worker: workers from TF_CONFIG; README, Distributed)")
flags.DEFINE_integer("cpu_replicas", 1, "--strategy=mirrored without GPUs: replicas on logical "
                     "CPU devices (exercises the distributed path; not faster)", lower_bound=1)
flags.DEFINE_bool("eval_only", False, "skip training: restore model_dir's checkpoint, evaluate")
HYPER = ("inner_lr", "inner_steps", "test_inner_steps", "inner_batch_size",
         "test_inner_batch_size", "transductive", "controller_units", "memory_slots",
         "memory_width", "read_heads", "usage_decay", "key_strength", "sequence_length",
         "label_scale", "parallel_tasks")


FLAG_NAMES = [f.name for f in FLAGS.get_flags_for_module(sys.modules[__name__])]


def resolve_flags():
    """Fills unset flags from the protocol; rejects flags the algorithm has no use for."""
    constructor = tf_meta.ALGORITHMS[FLAGS.algo]
    accepted = inspect.signature(getattr(constructor, "func", constructor)).parameters
    for name in HYPER:
        if FLAGS[name].present and name not in accepted:
            raise ValueError(f"--{name} does not apply to --algo={FLAGS.algo}")
    if FLAGS.dataset == "sinusoid" and FLAGS.algo not in protocols.SINUSOID:
        raise ValueError(f"--dataset=sinusoid supports --algo in {sorted(protocols.SINUSOID)}")
    for name, value in protocols.protocol(FLAGS.algo, FLAGS.dataset, FLAGS.train_ways or FLAGS.ways,
                                          FLAGS.train_shots or FLAGS.shots).items():
        if FLAGS[name].value is None and (name not in HYPER or name in accepted):
            FLAGS[name].value = value
    FLAGS.train_ways = FLAGS.train_ways or FLAGS.ways
    FLAGS.train_shots = FLAGS.train_shots or FLAGS.shots
    FLAGS.model_dir = FLAGS.model_dir or os.path.join("runs", FLAGS.algo)
    if FLAGS.export_dir is None:
        FLAGS.export_dir = os.path.join("saved_models", FLAGS.algo)
    return {name: FLAGS[name].value for name in HYPER
            if name in accepted and FLAGS[name].value is not None}


@functools.lru_cache(maxsize=1)  # flags are fixed for the run; MANN reads the test split again
def load_splits():
    """dict split -> data.Source for --dataset."""
    if FLAGS.dataset == "omniglot":
        return data.omniglot(FLAGS.split, data_dir=FLAGS.data_dir, download=FLAGS.download)
    if FLAGS.dataset == "folder":
        if not FLAGS.data_dir:
            raise ValueError("--dataset=folder needs --data_dir")
        return data.folder_splits(FLAGS.data_dir, seed=FLAGS.seed)
    return data.synthetic_splits(num_classes=100, input_shape=(28, 28, 1), seed=FLAGS.seed)


def episode_streams():
    """(train, val or None, test, input shape); train(start) is the training stream from
    meta-batch `start` on, val and test are fixed episode datasets."""
    if FLAGS.dataset == "sinusoid":
        train = functools.partial(data.make_sinusoid_dataset, FLAGS.train_shots,
                                  FLAGS.train_query_shots, FLAGS.meta_batch_size, FLAGS.seed)
        val, test = (data.make_sinusoid_dataset(FLAGS.shots, FLAGS.query_shots, 50,
                                                FLAGS.eval_seed + i, num_episodes=n)
                     for i, n in enumerate((FLAGS.val_episodes, FLAGS.eval_episodes)))
        return train, val, test, (1,)
    splits = load_splits()
    data.check_episode_spec(splits["train"], FLAGS.train_ways, FLAGS.train_shots,
                            FLAGS.train_query_shots, "train")
    train = functools.partial(data.make_episode_dataset, splits["train"], FLAGS.train_ways,
                              FLAGS.train_shots, FLAGS.train_query_shots,
                              FLAGS.meta_batch_size, FLAGS.seed, split="train")
    test_sizes = dict(ways=FLAGS.ways, shots=FLAGS.shots, query_shots=FLAGS.query_shots,
                      meta_batch_size=50, seed=FLAGS.eval_seed)
    val = (data.make_episode_dataset(splits["val"], **test_sizes, split="val",
                                     num_episodes=FLAGS.val_episodes)
           if "val" in splits else None)
    test = data.make_episode_dataset(splits["test"], **test_sizes, split="test",
                                     num_episodes=FLAGS.eval_episodes)
    return train, val, test, splits["train"].input_shape


def prepare(replicas=1):
    """Everything that can fail on bad input, before any training or export."""
    hyper = resolve_flags()
    if FLAGS.meta_batch_size % replicas:
        raise ValueError(f"--meta_batch_size={FLAGS.meta_batch_size} does not split evenly "
                         f"over the {replicas} replicas of --strategy={FLAGS.strategy}")
    adapted_dir = FLAGS.export_dir + "_adapted" if FLAGS.export_adapted else ""
    for path in (FLAGS.model_dir, FLAGS.export_dir, adapted_dir):
        if path:
            export.check_writable(path)
    if FLAGS.eval_only and not training.has_checkpoint(os.path.join(FLAGS.model_dir,
                                                                     "checkpoints")):
        raise ValueError(f"--eval_only needs a trained run in --model_dir={FLAGS.model_dir} "
                         "(no checkpoint there)")
    if FLAGS.export_adapted and not FLAGS.export_dir:
        raise ValueError("--export_adapted writes to <export_dir>_adapted: it needs --export_dir")
    FLAGS.eval_every = min(FLAGS.eval_every, FLAGS.steps)
    FLAGS.checkpoint_every = FLAGS.checkpoint_every or math.gcd(FLAGS.eval_every, 100)
    training.check_schedule(FLAGS.steps, FLAGS.eval_every, FLAGS.checkpoint_every)
    train, val, test, input_shape = episode_streams()
    regression = FLAGS.dataset == "sinusoid"
    learner = tf_meta.build_learner(
        FLAGS.algo, input_shape, ways=1 if regression else FLAGS.train_ways,
        backbone=backbones.sinusoid_mlp() if regression else None,
        regression=regression, **hyper)
    if learner.max_ways and FLAGS.ways > learner.max_ways:  # MAML, Reptile: a fixed head
        raise ValueError(f"--ways={FLAGS.ways} exceeds the {learner.max_ways}-way head "
                         "trained with --train_ways")
    support = adapted_support(learner, test, input_shape) if FLAGS.export_adapted else None
    return learner, hyper, train, val, test, input_shape, support


def parse_flags(argv):
    """absl's parser, with flag errors as the one-line `train.py: error:` of every bad input."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"train.py: error: {e}")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"train.py: error: unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    import keras
    keras.utils.set_random_seed(FLAGS.seed)  # before the learner is built: seeds its init
    try:
        strategy = training.make_strategy(FLAGS.strategy, FLAGS.cpu_replicas)
        with strategy.scope():
            learner, hyper, train, val, test, input_shape, support = prepare(
                strategy.num_replicas_in_sync)
        model_dir = training.worker_directory(strategy, FLAGS.model_dir)
        os.makedirs(model_dir, exist_ok=True)
    except (ValueError, OSError) as e:
        sys.exit(f"train.py: error: {e}")
    chief = training.is_chief(strategy)  # the one process writing results and exports
    if chief and not FLAGS.eval_only:  # the run's flags; --eval_only runs don't replace them
        used = [n for n in FLAG_NAMES
                if FLAGS[n].value is not None and (n not in HYPER or n in hyper)]
        with open(os.path.join(FLAGS.model_dir, "flags.txt"), "w") as f:  # replay: --flagfile
            f.write("".join(FLAGS[n].serialize() + "\n" for n in used))
    checkpoints = os.path.join(model_dir, "checkpoints")
    start = time.time()
    try:
        if FLAGS.eval_only:
            training.restore_for_evaluation(learner, checkpoints)
        else:
            with strategy.scope():
                learner.compile(optimizer=learner.meta_optimizer(
                    FLAGS.meta_lr, FLAGS.steps, FLAGS.lr_decay_every, FLAGS.lr_decay_rate),
                    jit_compile=False)
                training.fit(learner, train, checkpoints, FLAGS.steps, FLAGS.checkpoint_every,
                             FLAGS.eval_every, validation=val, callbacks=[
                                 keras.callbacks.TensorBoard(os.path.join(model_dir, "logs"))])
    except (ValueError, training.Diverged) as e:
        sys.exit(f"train.py: error: {e}")
    if not chief:
        return
    train_seconds = time.time() - start
    result = evaluation.evaluate_episodes(learner, test)
    if FLAGS.algo == "mann":  # the paper's own score: accuracy by presentation of a class
        try:
            result["instance_accuracy"] = mann.instance_accuracy(
                learner, load_splits()["test"], FLAGS.eval_episodes, FLAGS.eval_seed)
        except ValueError as e:
            print(f"instance accuracy skipped: {e}")
    result.update({n: FLAGS[n].value for n in ("algo", "dataset", "split", "ways", "shots",
                                               "query_shots", "steps", *HYPER)},
                  train_seconds=round(train_seconds, 1))
    task = ("sinusoid" if learner.regression else f"{FLAGS.ways}way") + f"_{FLAGS.shots}shot"
    with open(os.path.join(FLAGS.model_dir, f"test_{task}.json"), "w") as f:
        json.dump(result, f, indent=2)
    if learner.regression:
        score = f"MSE sinusoid {FLAGS.shots}-shot: {result['mse']:.3f} ± {result['ci95']:.3f}"
    else:
        score = (f"accuracy {FLAGS.ways}-way {FLAGS.shots}-shot: {100 * result['accuracy']:.2f}"
                 f" ± {100 * result['ci95']:.2f}%")
    print(f"test {score} (95% CI, {result['episodes']} episodes)")
    if "instance_accuracy" in result:
        print("instance accuracy (5 classes x 10 samples) at presentation "
              + ", ".join(f"{k}: {100 * v:.1f}%" for k, v in result["instance_accuracy"].items()))
    if FLAGS.export_dir:
        path = export.export_learner(learner, FLAGS.export_dir, input_shape,
                                     metadata={"algo": FLAGS.algo, "test": result})
        print(f"exported SavedModel to {path}")
    if FLAGS.export_adapted:
        path = export.export_adapted(learner, *support, FLAGS.export_dir + "_adapted",
                                     metadata={"algo": FLAGS.algo, "support": FLAGS.export_adapted})
        print(f"exported the adapted learner to {path}")


def adapted_support(learner, test, input_shape):
    """(support images, labels) for --export_adapted: a class-folder tree or 'test_episode'."""
    if not hasattr(learner, "adapt"):
        raise ValueError(f"--export_adapted needs an algorithm with an inner loop (maml, "
                         f"fomaml, reptile), not --algo={FLAGS.algo}")
    if FLAGS.export_adapted == "test_episode":
        episode = next(iter(test))
        return episode.support_x[0], episode.support_y[0]
    if learner.regression:
        raise ValueError("--export_adapted=<image folder> needs an image dataset; for "
                         "--dataset=sinusoid use --export_adapted=test_episode")
    source = data.folder(FLAGS.export_adapted, image_size=input_shape[0],
                         channels=input_shape[-1])
    if source.num_classes > learner.max_ways:
        raise ValueError(f"--export_adapted={FLAGS.export_adapted} has {source.num_classes} "
                         f"classes, more than the {learner.max_ways}-way head")
    images = [source.examples[c, i] for c in range(source.num_classes)
              for i in range(source.counts[c])]
    labels = [c for c in range(source.num_classes) for _ in range(source.counts[c])]
    return images, labels


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
