"""The benchmark harness: every measurement of docs/PERFORMANCE.md, one JSON line each.

For each algorithm (default: all seven; --workload=paper: the papers' three), in fresh
processes one after another, and for each --precision in turn:
  train     meta-training throughput (benchmarks/train_throughput.py): episodes_per_s,
            meta_iters_per_s, peak_rss_mb of that process, first_call/trace seconds,
            GFLOP/s and the fraction of the SGEMM ceiling for the peer's four workloads
  peer, compare  with --compare: ../shared/bench/peer_torch.py on the same workload (its
            --net, and --bf16 for bfloat16) right before and right after tf_meta's run, and
            the ratio tf_meta / mean(peer runs) with what differs between the two; float16
            has no peer counterpart (ratio null, and a note)
  precision with several precisions: each one's training throughput / the first one's
then once:
  pipeline  the input pipeline alone (benchmarks/pipeline_throughput.py):
            pipeline_episodes_per_s and its ratio to the (first precision's) training
then, with --serving, the served latencies of benchmarks/serving_latency.py in each
precision. The first line (kind "machine") describes the machine and the run. Progress goes
to stderr; the exit status is 1 if any measurement failed (its line has kind "error").

  python -m benchmarks.run > bench.jsonl                      # all seven, ~20 s timed each
  python -m benchmarks.run --compare --peer_python=/tmp/peerenv/bin/python --serving
  python -m benchmarks.run --algos=maml --inner_steps=3 --target_seconds=2
  python -m benchmarks.run --workload=paper --precision=float32,bfloat16 --compare \
      --peer_python=/tmp/peerenv/bin/python
"""

import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

from absl import app, flags

from benchmarks import memory, workloads

ROOT = pathlib.Path(__file__).resolve().parents[1]

FLAGS = flags.FLAGS
flags.DEFINE_list("algos", None, "algorithms to measure, in this order (default: every "
                  "algorithm of the registry, the peer's first)")
workloads.define_workload_flags()
flags.DEFINE_list("precision", ["float32"], "the learners' precisions (float32, bfloat16, "
                  "float16), each algorithm measured in each in turn; with several, a "
                  "'precision' record of each one's training throughput against the first's")
flags.DEFINE_bool("train", True, "measure training throughput")
flags.DEFINE_bool("pipeline", True, "measure the input pipeline alone")
flags.DEFINE_bool("compare", False, "run the PyTorch peer before and after each tf_meta run "
                  "(needs --peer_python)")
flags.DEFINE_string("peer_python", None, "python of the PyTorch environment, e.g. "
                    "/tmp/peerenv/bin/python")
flags.DEFINE_string("peer_script", str(ROOT.parent / "shared" / "bench" / "peer_torch.py"),
                    "the peer benchmark")
flags.DEFINE_bool("serving", False, "also measure served latency (benchmarks/serving_latency.py)")
flags.DEFINE_integer("serving_calls", 200, "timed calls per served request")
flags.DEFINE_integer("timeout_seconds", 3600, "give up on one measurement process after this")


def emit(record):
    """Prints a record as one JSON line on stdout, and a short summary on stderr."""
    print(json.dumps(record), flush=True)
    shown = {k: v for k, v in record.items() if k not in ("config", "stderr_tail") and
             not isinstance(v, (dict, list))}
    print("  ".join(f"{k}={v}" for k, v in shown.items()), file=sys.stderr, flush=True)


def run_process(command, env, what, algo, sample_memory=True):
    """Runs a measurement process: (its JSON records, whether it succeeded).

    With `sample_memory`, the process's resident memory is sampled from outside while it
    runs (benchmarks/memory.py) and the peaks are added to its last record (its one
    measurement: a train, pipeline or peer run). A failure (non-zero
    exit, no record, timeout) is emitted as an "error" record.
    """
    try:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
    except OSError as e:
        emit({"kind": "error", "algo": algo, "what": what, "error": str(e)})
        return [], False
    # Not while serving latency is timed: the sampler's polling would share its CPU.
    sampler = memory.PeakSampler(process.pid) if sample_memory else None
    try:
        stdout, stderr = process.communicate(timeout=FLAGS.timeout_seconds)
    except subprocess.TimeoutExpired as e:
        process.kill()
        process.communicate()
        emit({"kind": "error", "algo": algo, "what": what, "error": str(e)})
        return [], False
    finally:
        peaks = sampler.stop() if sampler else {}
    records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not records:
        emit({"kind": "error", "algo": algo, "what": what, "returncode": process.returncode,
              "command": " ".join(command), "stderr_tail": stderr[-2000:]})
        return records, False
    records[-1].update(peaks)
    return records, True


def tf_env():
    """The environment of tf_meta's measurement processes: this checkout first on the path."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))


def peer_env():
    """The peer's environment: nothing of this project's Python on its path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def worker(module, algo, *args):
    return [sys.executable, "-m", f"benchmarks.{module}", f"--algo={algo}",
            f"--target_seconds={FLAGS.target_seconds}", f"--warmup={FLAGS.warmup}", *args]


def measure_algo(algo):
    """Emits the records of one algorithm; returns False if a measurement failed."""
    config = workloads.flagged_workload(algo)
    ok, trains = True, {}
    for precision in FLAGS.precision:
        done, trains[precision] = measure_training(algo, config, precision)
        ok &= done
    emit_precision_ratios(algo, trains)
    if FLAGS.pipeline:
        extra = [f"--workload={FLAGS.workload}"] + (
            [f"--meta_batch_size={FLAGS.meta_batch_size}"]
            if FLAGS.meta_batch_size is not None else [])
        records, done = run_process(worker("pipeline_throughput", algo, *extra), tf_env(),
                                    "pipeline", algo)
        ok &= done
        if done:
            record = records[-1]
            train = trains[FLAGS.precision[0]]
            training = train["episodes_per_s"] if train else None
            record.update(training_episodes_per_s=training, ratio=(
                round(record["pipeline_episodes_per_s"] / training, 2) if training else None))
            emit(record)
    return ok


def measure_training(algo, config, precision):
    """Emits the "train" record of `algo` on `config` in `precision` and, with --compare,
    the peer's runs of the same workload around it and their "compare" record.

    Returns:
      (whether every measurement succeeded, the train record or None).
    """
    peer_command = workloads.peer_command(FLAGS.peer_python, FLAGS.peer_script, algo, config,
                                          FLAGS.target_seconds, FLAGS.warmup, precision)
    compare = FLAGS.compare and algo in workloads.PEER_ALGOS and peer_command is not None
    ok, peers, train = True, [], None

    def peer_run():
        records, done = run_process(peer_command, peer_env(), "peer", algo)
        if done:
            peers.append({"kind": "peer", "precision": precision, **records[-1]})
            emit(peers[-1])
        return done

    if compare:
        ok &= peer_run()  # before tf_meta's run ...
    if FLAGS.train or compare:
        extra = [f"--workload={FLAGS.workload}", f"--precision={precision}",
                 f"--parallel_tasks={FLAGS.parallel_tasks}", "--xla" if FLAGS.xla else "--noxla"]
        extra += [f"--{name}={FLAGS[name].value}" for name in ("inner_steps", "meta_batch_size")
                  if FLAGS[name].value is not None]
        records, done = run_process(worker("train_throughput", algo, *extra), tf_env(), "train",
                                    algo)
        ok &= done
        if done:
            train = records[-1]
            emit(train)
    if compare:
        ok &= peer_run()  # ... and after it: drift of the machine shows as a gap between them
        if train and peers:
            peer_rate = sum(p["tasks_per_s"] for p in peers) / len(peers)
            emit({"kind": "compare", "algo": algo, "precision": precision,
                  "metric": "episodes_per_s",
                  "ratio": round(train["episodes_per_s"] / peer_rate, 3),
                  "tf": train["episodes_per_s"], "peer": round(peer_rate, 3),
                  "peer_runs": [p["tasks_per_s"] for p in peers],
                  "tf_peak_rss_mb": train["peak_rss_mb"],
                  "peer_peak_rss_mb": max(p["peak_rss_mb"] for p in peers),
                  "tf_peak_anon_mb": train["peak_anon_mb"],
                  "peer_peak_anon_mb": max(p["peak_anon_mb"] for p in peers),
                  "peer_command": " ".join(peer_command[1:]),
                  "differences": workloads.peer_differences(algo, config, precision),
                  "config": train["config"]})
    elif FLAGS.compare:
        note = (f"the peer has no {algo}; its algorithms: {', '.join(workloads.PEER_ALGOS)}"
                if algo not in workloads.PEER_ALGOS else
                f"the peer has no {precision} counterpart: its mixed precision on a CPU is "
                "--bf16 (torch.autocast in bfloat16) only")
        emit({"kind": "compare", "algo": algo, "precision": precision, "ratio": None,
              "note": note})
    return ok, train


def emit_precision_ratios(algo, trains):
    """With several precisions, a "precision" record of each one's training throughput
    against the first one's (`trains`: precision -> train record or None, in run order)."""
    baseline, *others = FLAGS.precision
    for precision in others:
        base, train = trains[baseline], trains[precision]
        if base and train:
            emit({"kind": "precision", "algo": algo, "precision": precision,
                  "baseline": baseline, "metric": "episodes_per_s",
                  "ratio": round(train["episodes_per_s"] / base["episodes_per_s"], 3),
                  "episodes_per_s": train["episodes_per_s"],
                  "baseline_episodes_per_s": base["episodes_per_s"], "config": train["config"]})


def measure_serving(precision):
    """Streams benchmarks/serving_latency.py's records for learners in `precision`; returns
    False if it failed."""
    with tempfile.TemporaryDirectory(prefix="tf_meta_serving_") as tmp:
        records, done = run_process(
            [sys.executable, "-m", "benchmarks.serving_latency", f"--algos={','.join(FLAGS.algos)}",
             f"--calls={FLAGS.serving_calls}", f"--precision={precision}",
             f"--workload={FLAGS.workload}", f"--export_root={tmp}"],
            tf_env(), "serving", ",".join(FLAGS.algos), sample_memory=False)
    for record in records:
        emit(record)
    return done


def machine():
    """The "machine" record: CPU, load, versions, the command and the commit measured."""
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    return {"kind": "machine", "cpu": model, "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "commit": commit, "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]])}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    known = workloads.algos(FLAGS.workload)
    FLAGS.algos = FLAGS.algos or list(known)
    unknown = sorted(set(FLAGS.algos) - set(known))
    if unknown:
        raise app.UsageError(f"unknown --algos {unknown} for --workload={FLAGS.workload}; "
                             f"choose from {list(known)}")
    wrong = set(FLAGS.precision) - set(workloads.PRECISIONS)
    if wrong or not FLAGS.precision or len(set(FLAGS.precision)) < len(FLAGS.precision):
        raise app.UsageError(f"--precision={','.join(FLAGS.precision)}: choose one or more of "
                             f"{', '.join(workloads.PRECISIONS)}, each once")
    if FLAGS.compare and not FLAGS.peer_python:
        raise app.UsageError("--compare needs --peer_python (e.g. /tmp/peerenv/bin/python)")
    emit(machine())
    ok = True
    for algo in FLAGS.algos:
        ok &= measure_algo(algo)
    if FLAGS.serving:
        for precision in FLAGS.precision:
            ok &= measure_serving(precision)
    emit({"kind": "done", "ok": bool(ok), "loadavg": [round(x, 2) for x in os.getloadavg()]})
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    app.run(main)
