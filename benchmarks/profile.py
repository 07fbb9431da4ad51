"""Where one algorithm's meta-training time goes: a TensorFlow profiler trace and its op table.

Runs `--warmup` untimed steps of the benchmark workload (benchmarks/workloads.py), then
records `--steps` steps of Keras's `train_function` with the TensorFlow profiler
(`tf.profiler.experimental`), writing the trace to `--logdir`. The trace is TensorBoard's:
`pip install tensorboard-plugin-profile && tensorboard --logdir=<logdir>` shows it in the
Profile tab (trace viewer, op statistics). Without the plugin, this module reads the trace
itself (the XSpace protobuf TensorFlow ships) and prints one JSON line per op type, most
expensive first, then a "profile" summary line:

  op_ms_per_step   time spent inside ops of that type per meta-iteration, summed over the
                   executor threads (two threads can run ops at once, so the total can
                   exceed the wall time)
  share            fraction of all op time
  calls_per_step

  python -m benchmarks.profile --algo=maml
  python -m benchmarks.profile --algo=reptile --steps=20 --top=15
"""

import collections
import json
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

# --algo, --workload, --precision, --inner_steps, --meta_batch_size, --parallel_tasks, --xla
# and --warmup are train_throughput's flags: the profiled step is the one it times.
from benchmarks import train_throughput, workloads  # noqa: E402, F401
FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 3, "meta-iterations recorded")
flags.DEFINE_integer("top", 20, "op types printed")
flags.DEFINE_string("logdir", None, "where the trace goes (default: a temporary folder)")


def op_table(logdir, steps):
    """({op type: (seconds per step, calls per step)}, wall seconds per step) from a trace.

    Reads the newest `*.xplane.pb` under `logdir`: events on the host plane's executor
    lines ("tf_Compute...") are op executions, named by op type in their display name; the
    "multi_step_on_iterator" events on the Python thread's line (named after the program)
    are the steps themselves.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = max(pathlib.Path(logdir).rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    host = next(plane for plane in space.planes if plane.name == "/host:CPU")
    names = host.event_metadata
    picoseconds, calls, wall = collections.Counter(), collections.Counter(), 0
    for line in host.lines:
        if not line.name.startswith("tf_"):
            wall += sum(e.duration_ps for e in line.events
                        if names[e.metadata_id].name == "multi_step_on_iterator")
        elif line.name.startswith("tf_Compute"):
            for event in line.events:
                op_type = names[event.metadata_id].display_name
                if op_type:
                    picoseconds[op_type] += event.duration_ps
                    calls[op_type] += 1
    return ({t: (ps / 1e12 / steps, calls[t] / steps) for t, ps in picoseconds.items()},
            wall / 1e12 / steps)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import tensorflow as tf
    config = workloads.flagged_workload(FLAGS.algo)
    learner = workloads.build(FLAGS.algo, config, FLAGS.parallel_tasks, FLAGS.xla,
                              FLAGS.precision)
    batches = iter(workloads.episodes(config))
    learner.make_train_function()
    step = learner.train_function
    for _ in range(max(FLAGS.warmup, 1)):
        float(step(batches)["loss"])
    logdir = FLAGS.logdir or tempfile.mkdtemp(prefix=f"tf_meta_profile_{FLAGS.algo}_")
    tf.profiler.experimental.start(logdir)
    for _ in range(FLAGS.steps):
        logs = step(batches)
    float(logs["loss"])  # the last step has finished
    tf.profiler.experimental.stop()

    table, wall = op_table(logdir, FLAGS.steps)
    total = sum(seconds for seconds, _ in table.values())
    ranked = sorted(table.items(), key=lambda item: -item[1][0])
    for op_type, (seconds, calls) in ranked[:FLAGS.top]:
        print(json.dumps({"kind": "op", "algo": FLAGS.algo, "op": op_type,
                          "op_ms_per_step": round(seconds * 1e3, 2),
                          "share": round(seconds / total, 4),
                          "calls_per_step": round(calls, 1)}))
    print(json.dumps({"kind": "profile", "algo": FLAGS.algo, "logdir": logdir,
                      "steps": FLAGS.steps, "wall_ms_per_step": round(wall * 1e3, 1),
                      "op_ms_per_step": round(total * 1e3, 1),
                      "episodes_per_step": config.meta_batch_size,
                      "precision": FLAGS.precision,
                      "config": {**config._asdict(), "workload": FLAGS.workload,
                                 "parallel_tasks": FLAGS.parallel_tasks,
                                 "xla": FLAGS.xla}}),
          flush=True)


if __name__ == "__main__":
    app.run(main)
