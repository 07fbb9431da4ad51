"""How far a precision's meta-gradient is from the exact one, on one fixed meta-batch.

Builds the learner in float64 (the reference), then in float32, bfloat16 and float16 with
the same weights, computes the meta-gradient of one fixed Omniglot meta-batch in each, and
prints its relative error ||g - g64|| / ||g64|| over all trainable variables. As a yardstick,
it also prints how far the float32 meta-gradient of another meta-batch of the same size is
from this one's: the sampling noise every training step has anyway.

MAML and FOMAML take each task's gradient in a loop written here (their training loop keeps
float32 arrays, which float64 cannot enter); it is the mean over tasks of the query loss's
gradient, as `MAML.meta_gradients` computes.

  TFDS_DATA_DIR=../shared/data/tfds python -m benchmarks.meta_gradient_error --algo=maml \\
      --protocol=paper
  python -m benchmarks.meta_gradient_error --algo=protonet --query_shots=5 --meta_batch_size=1
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("algo", "maml", "the algorithm")
flags.DEFINE_enum("protocol", "tf_meta", ["paper", "tf_meta"], "whose network and inner loop "
                  "(paper: MAML's conv4_strided_mean, offsets not adapted, summed inner loss)")
flags.DEFINE_integer("query_shots", None, "queries per class (default: the protocol's)")
flags.DEFINE_integer("meta_batch_size", None, "tasks (default: the protocol's)")
flags.DEFINE_integer("seed", 3, "seed of the fixed meta-batch (the other one: seed + 1)")


def main(argv):
    del argv
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_meta import algorithms, data
    from tf_meta.config import RunConfig
    from tf_meta.episode import Episode

    config = RunConfig(algo=FLAGS.algo, protocol=FLAGS.protocol, dataset="omniglot")
    queries = FLAGS.query_shots or config.train_query_shots
    tasks = FLAGS.meta_batch_size or config.meta_batch_size
    hyper = {k: v for k, v in config.hyperparameters.items()
             if k in ("inner_lr", "inner_steps", "adapt_batchnorm", "sum_inner_loss")}
    train = data.omniglot(config.split, download=False)["train"]

    def meta_batch(seed):
        stream = data.make_episode_dataset(train, config.train_ways, config.train_shots,
                                           queries, tasks, seed)
        return next(iter(stream))

    def meta_gradient(learner, episodes):
        if not hasattr(learner, "first_order"):
            return tf.function(learner.meta_gradients)(episodes)[0]

        @tf.function
        def task(episode):
            with tf.GradientTape() as tape:
                logits = learner.query_logits(episode, training=True)
                loss = learner.query_loss(episode.query_y, logits)
            return tape.gradient(loss, learner.trainable_variables)

        grads = [task(Episode(*(t[i] for t in episodes))) for i in range(tasks)]
        return [sum(g) / tasks for g in zip(*grads)]

    def build(precision, weights=None):
        keras.utils.set_random_seed(0)
        if precision == "float64":
            keras.config.set_dtype_policy("float64")
        try:
            learner = algorithms.build_learner(FLAGS.algo, (28, 28, 1), ways=config.train_ways,
                                               network=config.network, precision=precision,
                                               **hyper)
        finally:
            keras.config.set_dtype_policy("float32")
        for variable, value in zip(learner.variables, weights or ()):
            variable.assign(tf.cast(value, variable.dtype))
        return learner

    def flat(grads):
        return np.concatenate([np.ravel(np.asarray(g, np.float64)) for g in grads])

    episodes = meta_batch(FLAGS.seed)
    reference = build("float64")
    weights = [v.numpy() for v in reference.variables]
    wide = tf.nest.map_structure(
        lambda t: tf.cast(t, tf.float64) if t.dtype == tf.float32 else t, episodes)
    exact = flat(meta_gradient(reference, wide))
    record = dict(algo=FLAGS.algo, protocol=FLAGS.protocol, network=config.network,
                  query_shots=queries, meta_batch_size=tasks, hyperparameters=hyper)
    for precision in ("float32", "bfloat16", "float16"):
        learner = build(precision, weights)
        grads = flat(meta_gradient(learner, episodes))
        record[f"{precision}_relative_error"] = float(
            np.linalg.norm(grads - exact) / np.linalg.norm(exact))
        if precision == "float32":
            other = flat(meta_gradient(learner, meta_batch(FLAGS.seed + 1)))
            record["another_meta_batch_relative_difference"] = float(
                np.linalg.norm(other - grads) / np.linalg.norm(grads))
    print(json.dumps(record))


if __name__ == "__main__":
    app.run(main)
