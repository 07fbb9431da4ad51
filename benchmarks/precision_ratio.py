"""bfloat16 (or float16) ÷ float32 training throughput of one learner, in one process, alternating.

`benchmarks.train_throughput` times one precision per process, so a ratio of two of its
records divides two moments of the machine: on this shared 2-core machine back-to-back
records of one configuration differ by up to 20%. Here one process builds the learner of
the workload (benchmarks/workloads.py) in every `--precisions` entry, warms each up, then
times them in turn, `--rounds` times `--round_seconds` each (float32, bfloat16, float32,
bfloat16, ...), so a slow spell falls on both. Prints one JSON line (kind
"precision_ratio"): each precision's median episodes/s over the rounds, and each other
precision's ratio to the first as the median of the per-round ratios (with their min and
max, the spread the reader should allow) and as the ratio of the fastest rounds
(interference only slows a round down, so each precision's fastest round is its least
disturbed: timeit's estimator), and every round's episodes/s.

  python -m benchmarks.precision_ratio --algo=reptile
  python -m benchmarks.precision_ratio --algo=maml --workload=paper --rounds=9
"""

import json
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from benchmarks import workloads  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("algo", "reptile", workloads.algos(), "algorithm to time")
workloads.define_workload_flags()
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "precisions to compare; the first is "
                  "the denominator")
flags.DEFINE_integer("rounds", 7, "timed rounds per precision", lower_bound=1)
flags.DEFINE_float("round_seconds", 3.0, "length of one timed round", lower_bound=0.1)


def compare(algo, config, precisions, rounds, round_seconds, warmup, workload="default",
            parallel_tasks=1, xla=False):
    """The "precision_ratio" record (see the module docstring)."""
    steps = {}
    for precision in precisions:
        learner = workloads.build(algo, config, parallel_tasks, xla, precision)
        batches = iter(workloads.episodes(config))
        learner.make_train_function()
        for _ in range(max(warmup, 1)):
            float(learner.train_function(batches)["loss"])
        steps[precision] = (learner.train_function, batches)
    rates = {precision: [] for precision in precisions}
    for _ in range(rounds):
        for precision in precisions:
            rate = workloads.steps_per_second(*steps[precision], round_seconds, at_least=2)
            rates[precision].append(rate * config.meta_batch_size)
    base = rates[precisions[0]]
    ratios = {}
    for precision in precisions[1:]:
        per_round = [r / b for r, b in zip(rates[precision], base)]
        ratios[precision] = {"median": round(statistics.median(per_round), 3),
                             "min": round(min(per_round), 3), "max": round(max(per_round), 3),
                             "fastest": round(max(rates[precision]) / max(base), 3)}
    return {"kind": "precision_ratio", "algo": algo,
            "episodes_per_s": {p: round(statistics.median(r), 2) for p, r in rates.items()},
            f"ratio_to_{precisions[0]}": ratios, "rounds": rounds,
            "per_round": {p: [round(rate, 2) for rate in r] for p, r in rates.items()},
            "round_seconds": round_seconds,
            "config": {**config._asdict(), "workload": workload,
                       "parallel_tasks": parallel_tasks, "xla": bool(xla)}}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = [p for p in FLAGS.precisions if p not in workloads.PRECISIONS]
    if unknown or len(FLAGS.precisions) < 2:
        raise app.UsageError(f"--precisions takes two or more of {', '.join(workloads.PRECISIONS)}"
                             f"; got {','.join(FLAGS.precisions)}")
    config = workloads.flagged_workload(FLAGS.algo)
    print(json.dumps(compare(FLAGS.algo, config, FLAGS.precisions, FLAGS.rounds,
                             FLAGS.round_seconds, FLAGS.warmup, FLAGS.workload,
                             FLAGS.parallel_tasks, FLAGS.xla)), flush=True)


if __name__ == "__main__":
    app.run(main)
