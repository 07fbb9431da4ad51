"""Time to accuracy: the wall time until validation accuracy first reaches fixed marks.

For each precision (`--precisions`), one after another and each in a fresh process (its
start-up, data loading and tracing are counted; no state is shared), the library's own run
(`tf_meta.experiment.train_and_evaluate`: the protocol's settings, validation runs,
checkpoints and TensorBoard logs) trains with one more Keras callback, `ValidationClock`,
which notes the time of every validation (benchmarks/accuracy_clock.py). Training stops
when validation accuracy has reached every mark, when --max_minutes is spent, or at
--max_steps; the run's test episodes then score the model it stopped with (not timed).
Each validation point has two clocks, in seconds:

  train_seconds  training since fit began (the first call's trace and the checkpoints
                 included), less the validation runs' own time: the marks' times
  total_seconds  since the run's process started: TensorFlow's start-up, loading the data,
                 building the learner, training and the validation runs so far

A mark is reached at the first validation whose accuracy is at least the mark; a mark the
run never reached is reported as null, never extrapolated. Validation accuracy is the run's
(--val_episodes fixed 5-way episodes of the validation classes), so a mark near the curve's
plateau is crossed by its noise too: 200 episodes of 5 queries (MAML's paper protocol) give
about ±1 point at 97%. Omniglot runs use its paper protocol (the default; ProtoNet's,
MAML's second-order one) and refuse to start without Omniglot prepared in TFDS_DATA_DIR.

  TFDS_DATA_DIR=../shared/data/tfds python -m benchmarks.time_to_accuracy --algo=protonet \\
      --precisions=float32,bfloat16 --json=tta_protonet.jsonl --png=tta_protonet.png
  TFDS_DATA_DIR=../shared/data/tfds python -m benchmarks.time_to_accuracy --algo=maml \\
      --precisions=float32,bfloat16 --max_minutes=60 --json=tta_maml.jsonl

Output: one JSON line per precision on stdout (and in --json): marks -> the point that
reached each (step, accuracy, both clocks) or null, the curve, the steps trained and why
training stopped, the test score, the commit, the load average before and after, the
commands. The runs' progress and a summary go to stderr.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time

STARTED = time.monotonic()  # the total clock of a worker: before TensorFlow's import

import tf_meta  # noqa: E402,F401 - first: holds back TensorFlow's start-up lines
from absl import app, flags, logging  # noqa: E402

from benchmarks.accuracy_clock import ValidationClock, crossings  # noqa: E402
from tf_meta import curves, experiment, training  # noqa: E402
from tf_meta.algorithms import ALGORITHMS  # noqa: E402
from tf_meta.config import RunConfig  # noqa: E402
from tf_meta.precision import PRECISIONS  # noqa: E402
from tf_meta.version import source_commit  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROG = "benchmarks.time_to_accuracy"
# The marks (validation accuracy, %) and validation interval (meta-iterations) of the
# measured algorithms: issue 18's marks, and an interval a few times shorter than the
# distance between them on docs/RESULTS.md's curves (ProtoNet: 96.8% after 500 episodes;
# MAML: 91.0, 95.1, 97.1% after 1,000, 2,000, 3,000 meta-iterations).
DEFAULT_MARKS = {"protonet": (95.0, 97.0, 98.0), "maml": (90.0, 95.0, 97.0)}
DEFAULT_EVAL_EVERY = {"protonet": 100, "maml": 250}

FLAGS = flags.FLAGS
flags.DEFINE_enum("algo", "protonet", sorted(ALGORITHMS), "the algorithm to train")
flags.DEFINE_enum("dataset", "omniglot", ["omniglot", "synthetic"], "omniglot (its paper "
                  "protocol), or synthetic clusters (tf_meta's protocol; for tests)")
flags.DEFINE_list("precisions", None, f"precisions to measure, in this order, one run each "
                  f"({', '.join(PRECISIONS)}; default: --precision)")
flags.DEFINE_enum("precision", None, PRECISIONS, "one precision (default float32)")
flags.DEFINE_list("marks", None, "validation accuracies in % to time (default: "
                  + "; ".join(f"{a} {','.join(f'{m:g}' for m in marks)}"
                              for a, marks in DEFAULT_MARKS.items()) + "; other algorithms "
                  "need them)")
flags.DEFINE_integer("eval_every", None, "meta-iterations between validation runs (default: "
                     + ", ".join(f"{a} {n}" for a, n in DEFAULT_EVAL_EVERY.items())
                     + ", else 500)")
flags.DEFINE_integer("val_episodes", 200, "validation episodes per validation run")
flags.DEFINE_integer("eval_episodes", None, "test episodes scoring the model training stopped "
                     "with (default: the protocol's)")
flags.DEFINE_integer("max_steps", None, "stop at this meta-iteration (default: the "
                     "protocol's --steps, which also sets learning-rate schedules that anneal "
                     "over the run: Reptile's)")
flags.DEFINE_float("max_minutes", None, "stop at the end of the first checkpoint interval "
                   "after this many minutes of a run's total clock (default: no budget)")
flags.DEFINE_string("workdir", "runs/time_to_accuracy", "each precision's run folder is "
                    "<workdir>/<algo>_<precision>, replaced if it holds a run")
flags.DEFINE_string("json", None, "also write the JSON lines here")
flags.DEFINE_string("png", None, "plot validation accuracy against minutes of training, one "
                    "line per precision, the marks as dotted lines (needs matplotlib)")
flags.DEFINE_bool("worker", False, "internal: run one precision in this process")


def emit(record, *files):
    line = json.dumps(record)
    for f in (sys.stdout, *files):
        print(line, file=f, flush=True)


def run_config(precision, eval_every):
    """The RunConfig of one precision's run: the dataset's protocol, --max_steps (the
    protocol's steps when unset), the validation and test settings given, no export.

    Raises:
      ValueError: one line naming the flag to change.
    """
    steps = (RunConfig(algo=FLAGS.algo, dataset=FLAGS.dataset).steps
             if FLAGS.max_steps is None else FLAGS.max_steps)
    if steps % eval_every:
        whose = " (the protocol's steps)" if FLAGS.max_steps is None else ""
        raise ValueError(f"--max_steps={steps}{whose} is not a multiple of "
                         f"--eval_every={eval_every}")
    return RunConfig.from_settings(
        algo=FLAGS.algo, dataset=FLAGS.dataset, precision=precision, steps=steps,
        eval_every=eval_every, val_episodes=FLAGS.val_episodes,
        eval_episodes=FLAGS.eval_episodes, download=False, export_dir="")


def run_folder(precision):
    return os.path.join(FLAGS.workdir, f"{FLAGS.algo}_{precision}")


def work(precision, marks, eval_every):
    """One precision's run in this process: a "validation" JSON line per validation, then
    a "run" line (points, steps, why it stopped, test score). Exits 2 on bad input."""
    # absl's notices (the checkpoint writer's, TFDS's warning before a missing Omniglot's
    # error) would only bury the progress lines and the one-line errors; runs start afresh,
    # so no checkpoint warning is lost.
    logging.set_verbosity(logging.ERROR)
    max_seconds = FLAGS.max_minutes * 60 if FLAGS.max_minutes else None
    clock = ValidationClock(max(marks), STARTED, max_seconds,
                            report=lambda point: emit({"kind": "validation", **point}))
    scores, stopped = None, None
    try:
        config = run_config(precision, eval_every)
        result = experiment.train_and_evaluate(config, run_folder(precision), overwrite=True,
                                               callbacks=[clock])
        scores = {k: result.scores[k] for k in ("accuracy", "ci95", "episodes")}
        print("\n".join(result.lines), flush=True)
    except training.Diverged as e:
        stopped = f"diverged: {e}"
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(2)  # bad input: the harness adds nothing to this line
    emit({"kind": "run", "points": clock.points, "steps": clock.step, "test": scores,
          "stopped": stopped or clock.stopped or f"--max_steps={config.steps} trained",
          "config": {**config.summary(), "precision": precision, "eval_every": eval_every,
                     "val_episodes": config.val_episodes}})


def worker_command(precision, marks, eval_every):
    given = dict(algo=FLAGS.algo, dataset=FLAGS.dataset, precisions=precision,
                 marks=",".join(f"{m:g}" for m in marks), eval_every=eval_every,
                 val_episodes=FLAGS.val_episodes, eval_episodes=FLAGS.eval_episodes,
                 max_steps=FLAGS.max_steps, max_minutes=FLAGS.max_minutes,
                 workdir=FLAGS.workdir)
    return [sys.executable, "-m", PROG, "--worker",
            *(f"--{name}={value}" for name, value in given.items() if value is not None)]


def measure(precision, marks, eval_every):
    """Runs one precision's worker process; returns its record (None: the worker failed,
    its error already on stderr) and its exit status."""
    command = worker_command(precision, marks, eval_every)
    load_before, began = os.getloadavg(), time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    run = None
    for line in process.stdout:  # the library's progress lines pass through to stderr
        record = json.loads(line) if line.startswith("{") else None
        if record is None:
            print(line, end="", file=sys.stderr, flush=True)
        elif record["kind"] == "run":
            run = record
        else:
            print(f"{precision}: step {record['step']}  val_accuracy "
                  f"{100 * record['accuracy']:.2f}%  {record['train_seconds']:.0f} s training, "
                  f"{record['total_seconds']:.0f} s total", file=sys.stderr, flush=True)
    if process.wait() or run is None:
        return None, process.returncode or 1
    reached_at = crossings(run["points"], marks)
    return {"kind": "time_to_accuracy", "algo": FLAGS.algo, "precision": precision,
            "marks": {f"{m:g}": reached_at[m] for m in marks}, "steps": run["steps"],
            "stopped": run["stopped"], "curve": run["points"], "test": run["test"],
            "process_seconds": round(time.monotonic() - began, 1), "commit": source_commit(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "command": " ".join(["python -m", PROG, *sys.argv[1:]]),
            "worker_command": " ".join(["python", *command[1:]]),
            "run_folder": run_folder(precision),
            "config": run["config"]}, 0


def summary(record):
    """One line: each mark's minutes of training and step, or "not reached"."""
    cells = [f"{mark}%: " + (f"{p['train_seconds'] / 60:.1f} min (step {p['step']:,})" if p
                             else "not reached") for mark, p in record["marks"].items()]
    return (f"{record['algo']} {record['precision']}: " + "   ".join(cells)
            + f"   [{record['steps']:,} steps; {record['stopped']}]")


def settings():
    """(precisions, marks in %, eval_every) from the flags.

    Raises:
      ValueError: one line naming the flag to change.
    """
    if FLAGS.precisions and FLAGS.precision:
        raise ValueError("give --precision or --precisions, not both")
    precisions = FLAGS.precisions or [FLAGS.precision or "float32"]
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"--precisions: unknown {unknown}; choose from {list(PRECISIONS)}")
    if not FLAGS.marks and FLAGS.algo not in DEFAULT_MARKS:
        raise ValueError(f"--algo={FLAGS.algo} has no default marks: give --marks "
                             "(validation accuracies in %, e.g. --marks=90,95)")
    try:
        marks = sorted(float(m) for m in FLAGS.marks) if FLAGS.marks else DEFAULT_MARKS[
            FLAGS.algo]
    except ValueError:
        marks = ()
    if not marks or not all(0 < m <= 100 for m in marks):
        raise ValueError(f"--marks={','.join(FLAGS.marks)}: accuracies in % in (0, 100]")
    if FLAGS.max_minutes is not None and FLAGS.max_minutes <= 0:
        raise ValueError(f"--max_minutes={FLAGS.max_minutes}: it must be positive")
    for name in ("eval_every", "max_steps"):
        if FLAGS[name].value is not None and FLAGS[name].value < 1:
            raise ValueError(f"--{name}={FLAGS[name].value}: it must be >= 1")
    return precisions, marks, (DEFAULT_EVAL_EVERY.get(FLAGS.algo, 500)
                               if FLAGS.eval_every is None else FLAGS.eval_every)


def main(argv):
    try:
        if len(argv) > 1:
            raise ValueError(f"unexpected arguments: {argv[1:]}")
        precisions, marks, eval_every = settings()
        if not FLAGS.worker:  # every setting checked before the first run starts
            for precision in precisions:
                run_config(precision, eval_every)
    except ValueError as e:
        sys.exit(f"{PROG}: error: {e}")
    if FLAGS.worker:
        return work(precisions[0], marks, eval_every)
    if FLAGS.png and importlib.util.find_spec("matplotlib") is None:
        sys.exit(f"{PROG}: error: --png needs matplotlib: pip install tf-meta[plots]")
    records = []
    with open(FLAGS.json or os.devnull, "w") as out:
        for precision in precisions:
            record, status = measure(precision, marks, eval_every)
            if record is None:
                sys.exit(status if status == 2 else  # bad input: the worker's one line said it
                         f"{PROG}: error: the {precision} run failed (exit {status}; its "
                         "output above)")
            emit(record, out)
            records.append(record)
    if FLAGS.png:
        curves.plot({r["precision"]: [(p["train_seconds"] / 60, p["accuracy"])
                                      for p in r["curve"]] for r in records if r["curve"]},
                    FLAGS.png, title=f"{FLAGS.algo}: time to accuracy",
                    xlabel="minutes of training (validation runs not counted)", marks=marks)
    print("\n".join(summary(r) for r in records), file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
