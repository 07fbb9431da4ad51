"""Meta-training throughput of a tf_meta learner on the PyTorch peer's configurations.

Same work as ../shared/bench/peer_torch.py: synthetic Omniglot-shaped data (a pool of 200
classes x 20 random 28x28 images), Conv-4, the peer's episode sizes and meta-batch. Prints one
JSON line: tasks_per_s, meta_iters_per_s, peak_rss_mb, trace_seconds, config.

  python benchmarks/train_throughput.py --algo=maml
  python benchmarks/train_throughput.py --algo=maml --inner_steps=3
"""

import json
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

import tf_meta  # noqa: E402
from tf_meta import data  # noqa: E402

# ways, shots, query_shots, inner_steps, meta_batch_size: the peer's DEFAULTS table, and
# (no peer for these) the training episodes of tf_meta's protocols: RelationNet 5-way 1-shot
# with 19 queries per class; MANN 5 classes x 10 labelled steps + 1 query each, 16 per batch;
# SNAIL 5-way 1-shot, 1 query per class, 32 per batch.
PEER_CONFIGS = {"maml": (5, 1, 15, 1, 32), "fomaml": (5, 1, 15, 1, 32),
                "protonet": (60, 5, 5, 0, 1), "reptile": (5, 5, 1, 5, 5),
                "relationnet": (5, 1, 19, 0, 1), "mann": (5, 10, 1, 0, 16),
                "snail": (5, 1, 1, 0, 32)}

FLAGS = flags.FLAGS
flags.DEFINE_enum("algo", "maml", sorted(PEER_CONFIGS), "algorithm to time")
flags.DEFINE_integer("inner_steps", None, "override the peer config's inner steps")
flags.DEFINE_integer("meta_batch_size", None, "override the peer config's meta-batch")
flags.DEFINE_integer("parallel_tasks", 1, "MAML/FOMAML: tasks whose meta-gradients run at once")
flags.DEFINE_float("target_seconds", 20.0, "timed work after warm-up")
flags.DEFINE_integer("warmup", 3, "untimed meta-iterations (the first one traces)")


def main(argv):
    del argv
    import keras
    ways, shots, query_shots, inner_steps, meta_batch = PEER_CONFIGS[FLAGS.algo]
    inner_steps = FLAGS.inner_steps or inner_steps
    meta_batch = FLAGS.meta_batch_size or meta_batch
    keras.utils.set_random_seed(0)
    pool = data.synthetic(200, 20, (28, 28, 1), noise=2.0)
    hyper = {}
    if FLAGS.algo in ("maml", "fomaml"):
        hyper = dict(inner_lr=0.4, inner_steps=inner_steps, parallel_tasks=FLAGS.parallel_tasks)
    elif FLAGS.algo == "reptile":
        hyper = dict(inner_lr=1e-3, inner_steps=inner_steps, inner_batch_size=10)
    learner = tf_meta.build_learner(FLAGS.algo, (28, 28, 1), ways=ways, **hyper)
    meta_lr = 1.0 if FLAGS.algo == "reptile" else 1e-3
    learner.compile(optimizer=learner.meta_optimizer(meta_lr, 100000, 100000, 1.0),
                    jit_compile=False)
    episodes = iter(tf_meta.make_episode_dataset(pool, ways, shots, query_shots, meta_batch,
                                                 seed=0))
    learner.make_train_function()
    step = learner.train_function  # the tf.function Keras fit() runs

    start = time.perf_counter()
    step(episodes)
    trace_seconds = time.perf_counter() - start
    for _ in range(FLAGS.warmup - 1):
        step(episodes)
    iters, start = 0, time.perf_counter()
    while time.perf_counter() - start < FLAGS.target_seconds or iters < 3:
        logs = step(episodes)
        iters += 1
    float(logs["loss"])  # wait for the last step
    seconds = time.perf_counter() - start
    print(json.dumps({
        "framework": "tf_meta", "algo": FLAGS.algo,
        "tasks_per_s": round(iters * meta_batch / seconds, 3),
        "meta_iters_per_s": round(iters / seconds, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "trace_seconds": round(trace_seconds, 2), "ways": ways, "shots": shots,
        "queries": query_shots, "inner_steps": inner_steps, "meta_batch": meta_batch,
        "iters": iters, "seconds": round(seconds, 2),
        **({"parallel_tasks": FLAGS.parallel_tasks} if "parallel_tasks" in hyper else {})}),
        flush=True)


if __name__ == "__main__":
    app.run(main)
