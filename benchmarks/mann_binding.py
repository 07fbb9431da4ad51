"""Does MANN learn to bind items to labels? A few minutes on a CPU, without Omniglot.

Meta-trains a MANN on sequences of `--ways` classes x `--samples` items drawn from
well-separated Gaussian clusters (16-d, noise 0.3, 300 training classes), then prints the
paper's instance accuracy on unseen classes after every `--every` steps. Label bookkeeping
alone (guess a label not yet shown) scores ~0.48 at the 2nd presentation of 3 classes x 5;
the binding is what lifts it above that. docs/RESULTS.md ("Why MANN did not learn") lists
the runs.

  python benchmarks/mann_binding.py                     # 3 x 5, small memory, β = 10
  python benchmarks/mann_binding.py --key_strength=1    # the paper's reads: stays at ~0.48
  python benchmarks/mann_binding.py --ways=5 --samples=10 --paper_sizes --steps=2000
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("ways", 3, "classes per sequence")
flags.DEFINE_integer("samples", 5, "items per class in a sequence")
flags.DEFINE_bool("paper_sizes", False, "MANN's declared sizes, the paper's (memory 128 x 40, "
                  "4 heads, controller 200; else 16 x 16, 2 heads, 64)")
flags.DEFINE_float("key_strength", None, "β of the reads (default: MANN's declared 10; 1: the "
                   "paper's)")
flags.DEFINE_float("meta_lr", None, "Adam learning rate (default: MANN's protocol's)")
flags.DEFINE_integer("steps", 1000, "meta-batches (of the protocol's size, 16 sequences)")
flags.DEFINE_integer("every", 250, "steps between instance-accuracy readings")
flags.DEFINE_integer("seed", 0, "seed of initialisation and training sequences")


def main(argv):
    del argv
    import keras
    from tf_meta import data, evaluation, experiment
    from tf_meta.config import RunConfig

    keras.utils.set_random_seed(FLAGS.seed)
    splits = data.synthetic_splits(num_classes=500, input_shape=(16,), noise=0.3,
                                   examples_per_class=20)
    sizes = {} if FLAGS.paper_sizes else dict(controller_units=64, memory_slots=16,
                                              memory_width=16, read_heads=2)
    # The rest (queries, meta-batch, rate schedule, memory) is MANN's protocol and declared
    # defaults; its Adam ignores the protocol's step count (no decay).
    config = RunConfig.from_settings(
        algo="mann", dataset="synthetic", ways=FLAGS.ways, shots=FLAGS.samples,
        train_ways=FLAGS.ways, train_shots=FLAGS.samples, meta_lr=FLAGS.meta_lr,
        seed=FLAGS.seed, key_strength=FLAGS.key_strength, **sizes)
    learner = experiment.compile_learner(experiment.make_learner(config, (16,)), config)
    train = data.make_episode_dataset(splits["train"], config.train_ways, config.train_shots,
                                      config.train_query_shots, config.meta_batch_size,
                                      config.seed)
    presentations = tuple(k for k in (1, 2, 3, 5, 10) if k <= FLAGS.samples)
    start = time.time()
    for done in range(FLAGS.every, FLAGS.steps + 1, FLAGS.every):
        history = learner.fit(train, steps_per_epoch=FLAGS.every, epochs=1, verbose=0).history
        scores = evaluation.instance_accuracy(learner, splits["test"], episodes=200, seed=1,
                                              classes=FLAGS.ways, samples=FLAGS.samples,
                                              presentations=presentations)
        print(f"step {done} ({time.time() - start:.0f} s): loss {history['loss'][-1]:.3f}, "
              f"query accuracy {history['accuracy'][-1]:.3f}, instance accuracy "
              + " ".join(f"{k}:{100 * v:.1f}" for k, v in scores.items()), flush=True)


if __name__ == "__main__":
    app.run(main)
