"""The benchmark harness: every measurement of docs/PERFORMANCE.md, one JSON line each.

For each algorithm (default: all seven), in fresh processes one after another:
  train     meta-training throughput (benchmarks/train_throughput.py): episodes_per_s,
            meta_iters_per_s, peak_rss_mb of that process, first_call/trace seconds,
            GFLOP/s and the fraction of the SGEMM ceiling for the peer's four workloads
  pipeline  the input pipeline alone (benchmarks/pipeline_throughput.py):
            pipeline_episodes_per_s and its ratio to the training episodes_per_s
  peer, compare  with --compare: ../shared/bench/peer_torch.py on the same workload right
            before and right after tf_meta's run, and the ratio tf_meta / mean(peer runs)
then, with --serving, the served latencies of benchmarks/serving_latency.py. The first line
(kind "machine") describes the machine and the run. Progress goes to stderr; the exit status
is 1 if any measurement failed (its line has kind "error").

  python -m benchmarks.run > bench.jsonl                      # all seven, ~20 s timed each
  python -m benchmarks.run --compare --peer_python=/tmp/peerenv/bin/python --serving
  python -m benchmarks.run --algos=maml --inner_steps=3 --target_seconds=2
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
    config = workloads.workload(algo, FLAGS.inner_steps, FLAGS.meta_batch_size)
    compare = FLAGS.compare and algo in workloads.PEER_ALGOS
    peer_command = workloads.peer_command(FLAGS.peer_python, FLAGS.peer_script, algo, config,
                                          FLAGS.target_seconds, FLAGS.warmup)
    ok, peers, train = True, [], None

    def peer_run():
        records, done = run_process(peer_command, peer_env(), "peer", algo)
        if done:
            peers.append({"kind": "peer", **records[-1]})
            emit(peers[-1])
        return done

    if compare:
        ok &= peer_run()  # before tf_meta's run ...
    if FLAGS.train or compare:
        extra = [f"--parallel_tasks={FLAGS.parallel_tasks}", "--xla" if FLAGS.xla else "--noxla"]
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
            emit({"kind": "compare", "algo": algo, "metric": "episodes_per_s",
                  "ratio": round(train["episodes_per_s"] / peer_rate, 3),
                  "tf": train["episodes_per_s"], "peer": round(peer_rate, 3),
                  "peer_runs": [p["tasks_per_s"] for p in peers],
                  "tf_peak_rss_mb": train["peak_rss_mb"],
                  "peer_peak_rss_mb": max(p["peak_rss_mb"] for p in peers),
                  "tf_peak_anon_mb": train["peak_anon_mb"],
                  "peer_peak_anon_mb": max(p["peak_anon_mb"] for p in peers),
                  "config": train["config"]})
    elif FLAGS.compare:
        emit({"kind": "compare", "algo": algo, "ratio": None,
              "note": f"the peer has no {algo}; its algorithms: {', '.join(workloads.PEER_ALGOS)}"})
    if FLAGS.pipeline:
        extra = ([f"--meta_batch_size={FLAGS.meta_batch_size}"]
                 if FLAGS.meta_batch_size is not None else [])
        records, done = run_process(worker("pipeline_throughput", algo, *extra), tf_env(),
                                    "pipeline", algo)
        ok &= done
        if done:
            record = records[-1]
            training = train["episodes_per_s"] if train else None
            record.update(training_episodes_per_s=training, ratio=(
                round(record["pipeline_episodes_per_s"] / training, 2) if training else None))
            emit(record)
    return ok


def measure_serving():
    """Streams benchmarks/serving_latency.py's records; returns False if it failed."""
    with tempfile.TemporaryDirectory(prefix="tf_meta_serving_") as tmp:
        records, done = run_process(
            [sys.executable, "-m", "benchmarks.serving_latency", f"--algos={','.join(FLAGS.algos)}",
             f"--calls={FLAGS.serving_calls}", f"--export_root={tmp}"],
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
    known = workloads.algos()
    FLAGS.algos = FLAGS.algos or list(known)
    unknown = sorted(set(FLAGS.algos) - set(known))
    if unknown:
        raise app.UsageError(f"unknown --algos {unknown}; choose from {list(known)}")
    if FLAGS.compare and not FLAGS.peer_python:
        raise app.UsageError("--compare needs --peer_python (e.g. /tmp/peerenv/bin/python)")
    emit(machine())
    ok = True
    for algo in FLAGS.algos:
        ok &= measure_algo(algo)
    if FLAGS.serving:
        ok &= measure_serving()
    emit({"kind": "done", "ok": bool(ok), "loadavg": [round(x, 2) for x in os.getloadavg()]})
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    app.run(main)
