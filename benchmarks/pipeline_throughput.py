"""Episodes per second of the input pipeline alone, for one algorithm's benchmark workload.

Iterates `make_episode_dataset` for the workload of benchmarks/workloads.py with no learner
in the process, and prints one JSON line (kind "pipeline"): pipeline_episodes_per_s,
meta_batches_per_s and the config. The ratio to the episodes training consumes is
`python -m benchmarks.run`'s, which runs both.

  python -m benchmarks.pipeline_throughput --algo=protonet
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from benchmarks import workloads  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("algo", "maml", workloads.algos(), "algorithm whose workload to sample")
flags.DEFINE_enum("workload", "default", list(workloads.WORKLOADS), "the workload set "
                  "(benchmarks/workloads.py): default or paper")
flags.DEFINE_integer("meta_batch_size", None, "episodes per meta-batch (default: the workload's)")
flags.DEFINE_float("target_seconds", 20.0, "timed iteration after warm-up")
flags.DEFINE_integer("warmup", 3, "untimed meta-batches (the first builds the pipeline)")


def measure(algo, config, target_seconds, warmup, workload="default"):
    """The "pipeline" record of `algo`'s episodes, `config` of set `workload` (see the module
    docstring)."""
    batches = iter(workloads.episodes(config))
    for _ in range(max(warmup, 1)):
        next(batches)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < target_seconds or count < 3:
        next(batches)  # eager tensors: the meta-batch is fully assembled when this returns
        count += 1
    seconds = time.perf_counter() - start
    return {"kind": "pipeline", "algo": algo,
            "pipeline_episodes_per_s": round(count * config.meta_batch_size / seconds, 2),
            "meta_batches_per_s": round(count / seconds, 2),
            "config": {**config._asdict(), "workload": workload}, "meta_batches": count,
            "seconds": round(seconds, 2)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = workloads.flagged_workload(FLAGS.algo)
    print(json.dumps(measure(FLAGS.algo, config, FLAGS.target_seconds, FLAGS.warmup,
                             FLAGS.workload)), flush=True)


if __name__ == "__main__":
    app.run(main)
