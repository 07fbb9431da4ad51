"""A meta-batch's tasks in a loop or as one batched computation: which trains (tests) faster.

Builds two learners of one configuration (`--protocol=paper`: the papers' Omniglot MAML,
strided Conv-4 with mean pooling, 5-way 1-shot, 1 query per class, meta-batch 32; or
`--protocol=tf_meta`: the max-pool Conv-4, 15 queries per class), one with
`batch_tasks=False` (tasks one after another in a tf.while_loop) and one with
`batch_tasks=True` (`tf_meta.algorithms.task_batch`: tasks stacked on channels, grouped
convolutions; batched whatever the task size, which MAML's default batches only up to
`MAML.BATCHED_FIRST_CONV_VALUES`), with the same weights, and times the tf.function `fit()` runs
(`learner.train_function`) on the same synthetic 28x28 episodes. The machine is shared, so
the two alternate in this process, `--rounds` times `--seconds` each, and the best round of
each is compared. Prints one JSON line per (algorithm, meta-batch): tasks/s of both, the
ratio, the batched/looped meta-gradient difference on one meta-batch, and whether the
default (`MAML.batching_pays`) batches this configuration.

`--stage=test` times evaluation instead (`batch_logits` with training=False on the test
episodes, `--shots` and `--query_shots` per class, meta-batches of `--meta_batch_sizes`; the
evaluation's default is 50): MAML's and Reptile's test-time adaptation, whose default
batches up to `BATCHED_FIRST_CONV_VALUES` of its learner (Reptile: per test inner step of
`test_inner_batch_size` images); it reports the largest logit difference instead.

  python -m benchmarks.task_batching
  python -m benchmarks.task_batching --algos=maml --meta_batch_sizes=4,16,32
  python -m benchmarks.task_batching --protocol=tf_meta --meta_batch_sizes=32
  python -m benchmarks.task_batching --stage=test --algos=reptile,maml --meta_batch_sizes=50
  python -m benchmarks.task_batching --stage=test --algos=reptile --network=conv4 --shots=5 \
      --test_inner_batch_size=10 --meta_batch_sizes=50
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("algos", ["maml", "fomaml"], "algorithms to time")
flags.DEFINE_list("meta_batch_sizes", ["32"], "meta-batch sizes to time")
flags.DEFINE_enum("protocol", "paper", ["paper", "tf_meta"], "the Omniglot protocol whose "
                  "training configuration is timed")
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16", "float16"], "precision")
flags.DEFINE_string("network", None, "the backbone network (default: the protocol's)")
flags.DEFINE_integer("query_shots", None, "queries per class of the timed episodes, training "
                     "or test (default: the protocol's)")
flags.DEFINE_enum("stage", "train", ["train", "test"], "what is timed: meta-training steps or "
                  "evaluation (test-time adaptation and scoring)")
flags.DEFINE_integer("shots", None, "support examples per class of test episodes (default: "
                     "the protocol's)")
flags.DEFINE_integer("test_inner_batch_size", None, "Reptile's examples per test inner step "
                     "(default: its protocol's)")
flags.DEFINE_integer("rounds", 5, "alternating rounds; the best of each is reported")
flags.DEFINE_float("seconds", 4.0, "timed work per round and path")


def learners(algo, protocol, meta_batch_size, precision, **settings):
    """(config, {batched: compiled learner}) with equal initial weights; `settings` override
    the protocol's run settings where not None."""
    import keras

    from tf_meta import experiment
    from tf_meta.config import RunConfig
    built = {}
    for batched in (False, True):
        try:
            config = RunConfig.from_settings(
                algo=algo, protocol=protocol, dataset="omniglot",
                meta_batch_size=meta_batch_size, precision=precision, batch_tasks=batched,
                **{name: value for name, value in settings.items() if value is not None})
        except ValueError as e:  # a setting the algorithm lacks or refuses: one line
            raise app.UsageError(str(e)) from None
        keras.utils.set_random_seed(0)
        learner = experiment.compile_learner(experiment.make_learner(config, (28, 28, 1)), config)
        learner.optimizer.build(learner.trainable_variables)
        if batched:  # batched whatever the size, to time it where MAML would loop
            learner.BATCHED_FIRST_CONV_VALUES = float("inf")
        learner.make_train_function()
        built[batched] = learner
    return config, built


def gradient_difference(built, episodes):
    """max |batched - looped| / max |looped| over the meta-gradient on one meta-batch."""
    import tensorflow as tf
    looped = tf.function(built[False].meta_gradients)(episodes)[0]
    batched = tf.function(built[True].meta_gradients)(episodes)[0]
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in looped)
    return max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(looped, batched)) / scale


def logit_difference(built, episodes):
    """max |batched - looped| / max |looped| over the test logits of one meta-batch."""
    import tensorflow as tf
    looped = tf.function(built[False].looped_logits)(episodes, False)
    batched = tf.function(built[True].batched_logits)(episodes, False)
    return float(tf.reduce_max(tf.abs(batched - looped)) / tf.reduce_max(tf.abs(looped)))


def compare(algo, meta_batch_size):
    import tensorflow as tf

    import tf_meta
    from benchmarks import workloads
    test = FLAGS.stage == "test"
    settings = dict(network=FLAGS.network, test_inner_batch_size=FLAGS.test_inner_batch_size)
    settings.update(dict(shots=FLAGS.shots, query_shots=FLAGS.query_shots) if test else dict(
        train_query_shots=FLAGS.query_shots))
    config, built = learners(algo, FLAGS.protocol, meta_batch_size, FLAGS.precision, **settings)
    pool = tf_meta.data.synthetic(200, 20, workloads.INPUT_SHAPE, noise=2.0)
    sizes = ((config.ways, config.shots, config.query_shots) if test else
             (config.train_ways, config.train_shots, config.train_query_shots))
    batches = iter(tf_meta.make_episode_dataset(pool, *sizes, meta_batch_size, seed=0))
    episodes = next(batches)
    if test:
        difference = logit_difference(built, episodes)
        steps = {batched: tf.function(lambda batches, learner=learner: learner.batch_logits(
            next(batches), training=False)) for batched, learner in built.items()}
    else:
        difference = gradient_difference(built, episodes)
        steps = {batched: learner.train_function for batched, learner in built.items()}
    for step in steps.values():  # trace and warm up
        for _ in range(3):
            step(batches)
    best = {False: 0.0, True: 0.0}
    for _ in range(FLAGS.rounds):
        for batched, step in steps.items():
            best[batched] = max(best[batched], workloads.steps_per_second(
                step, batches, FLAGS.seconds))
    looped, batched = (best[b] * meta_batch_size for b in (False, True))
    return {"kind": "task_batching", "stage": FLAGS.stage, "algo": algo,
            "protocol": FLAGS.protocol, "network": config.network, "precision": FLAGS.precision,
            "meta_batch_size": meta_batch_size, "episode": dict(zip(
                ("ways", "shots", "query_shots"), sizes)),
            "images_per_pass": built[False].batching_images(episodes, training=not test),
            "looped_tasks_per_s": round(looped, 2), "batched_tasks_per_s": round(batched, 2),
            "batched_over_looped": round(batched / looped, 3),
            f"max_{'logit' if test else 'gradient'}_difference": float(f"{difference:.2e}"),
            "batching_refusal": built[True].batching_refusal(),
            "default_batches": built[False].batching_pays(episodes, training=not test),
            "rounds": FLAGS.rounds}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for algo in FLAGS.algos:
        for size in FLAGS.meta_batch_sizes:
            print(json.dumps(compare(algo, int(size))), flush=True)


if __name__ == "__main__":
    app.run(main)
