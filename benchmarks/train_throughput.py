"""Meta-training throughput of one tf_meta learner on its benchmark workload, in this process.

Times the tf.function Keras `fit()` runs (`learner.train_function`) on the workload of
benchmarks/workloads.py and prints one JSON line (kind "train"): episodes_per_s,
meta_iters_per_s, peak_rss_mb of this process, first_call_seconds and trace_seconds, GFLOP/s
against the peer README's FLOP count, the precision and the config. Peak RSS is per process,
so run one algorithm per process; `python -m benchmarks.run` does.

  python -m benchmarks.train_throughput --algo=maml
  python -m benchmarks.train_throughput --algo=maml --inner_steps=3 --parallel_tasks=2
  python -m benchmarks.train_throughput --algo=fomaml --workload=paper --precision=bfloat16
"""

import json
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from benchmarks import workloads  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("algo", "maml", workloads.algos(), "algorithm to time")
workloads.define_workload_flags()
flags.DEFINE_enum("precision", "float32", workloads.PRECISIONS, "the learner's precision "
                  "(tf_meta.precision): float32, or mixed bfloat16 or float16")


def peak_rss_mb():
    """This process's peak resident set size so far, MB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure(algo, config, parallel_tasks, xla, target_seconds, warmup, precision="float32",
            workload="default"):
    """The "train" record of `algo` on `config` (a Workload of set `workload`) in
    `precision` (see the module docstring)."""
    import keras
    import tensorflow as tf
    learner = workloads.build(algo, config, parallel_tasks, xla, precision)
    batches = iter(workloads.episodes(config))
    learner.make_train_function()
    step = learner.train_function  # what fit() calls once per meta-iteration

    start = time.perf_counter()
    float(step(batches)["loss"])
    first_call = time.perf_counter() - start
    for _ in range(max(warmup, 1) - 1):
        step(batches)
    iters, seconds = workloads.timed_calls(step, batches, target_seconds)
    episodes_per_s = iters * config.meta_batch_size / seconds
    gflops, sgemm_fraction = workloads.gflop_per_s(algo, config, episodes_per_s, precision)
    return {
        "kind": "train", "framework": "tf_meta", "algo": algo, "precision": learner.precision,
        "episodes_per_s": round(episodes_per_s, 3),
        "meta_iters_per_s": round(iters / seconds, 4),
        "peak_rss_mb": peak_rss_mb(),
        "first_call_seconds": round(first_call, 2),
        # The first call traces, optimises the graph and runs one step: less one timed step.
        "trace_seconds": round(max(first_call - seconds / iters, 0.0), 2),
        "gflop_per_s": gflops, "sgemm_fraction": sgemm_fraction,
        "config": {**config._asdict(), "workload": workload, "parallel_tasks": parallel_tasks,
                   "xla": bool(xla)},
        "hyperparameters": learner.hyperparameter_values(),  # as built: declared defaults + config
        "iters": iters, "seconds": round(seconds, 2),
        "tensorflow": tf.__version__, "keras": keras.__version__}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = workloads.flagged_workload(FLAGS.algo)
    record = measure(FLAGS.algo, config, FLAGS.parallel_tasks, FLAGS.xla, FLAGS.target_seconds,
                     FLAGS.warmup, FLAGS.precision, FLAGS.workload)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    app.run(main)
