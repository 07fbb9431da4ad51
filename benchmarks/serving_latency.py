"""Served latency: each algorithm's SavedModel loaded as TF Serving loads it, timed per request.

For each algorithm and request size (default 5-way 1-shot and 20-way 5-shot, one query per
class), a fresh process that cannot import tf_meta loads the export with
`tf.saved_model.load(path).signatures["serving_default"]` and times `--calls` requests after
`--warmup_calls` untimed ones. One JSON line each (kind "serving"): p50_ms, p99_ms, mean_ms,
max_ms, first_call_ms, load_seconds. A request the export cannot answer (a head with fewer
outputs than the request's ways) gives p50_ms null and the model's own error as the reason.

The exports are freshly initialised learners (latency does not depend on the weights),
written by one process that imports tf_meta. Each is the learner a run builds
(`tf_meta.experiment.make_learner`) from the RunConfig of the algorithm's benchmark workload
(benchmarks/workloads.py) with episodes of the request's size, so its hyperparameters are
the declared defaults and the protocol's: learners that adapt (ADAPTS) do so inside the
served graph with their declared `test_inner_steps`, and learners with a fixed head
(HAS_HEAD) are exported once per request size with a head of the request's ways (SNAIL's
sequence covering the request's, ways x shots + 1), in `--precision` (float32, or mixed
bfloat16 or float16: the networks compute in it, the requests and answers stay float32) and
with `--workload`'s network (default; paper: the papers' strided networks). Each record
names the export's `precision`, `head_ways` and `test_inner_steps`; with `--model_root`, the
precision is the export's own, read from its assets.extra/tf_meta.json.
`--model_root` times existing exports instead, <model_root>/<algo>/<highest version>, as TF
Serving would pick. `--signature` picks the signature timed: where it takes images as the
source provides them (an export with an image contract: serving_default, or encoded), the
request holds `--source_size`² Omniglot-like drawings (dark strokes on white, one channel),
as pixels or PNG bytes, and the time includes the preprocessing in the graph.

  python -m benchmarks.serving_latency
  python -m benchmarks.serving_latency --algos=protonet,maml --calls=500
  python -m benchmarks.serving_latency --algos=protonet,maml --precision=bfloat16
  python -m benchmarks.serving_latency --model_root=saved_models --algos=protonet
  python -m benchmarks.serving_latency --model_root=saved_models --algos=protonet,maml \
      --requests=5x1 --signature=encoded
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
# No default here: the timing worker runs this file without this checkout on its path, so
# the algorithm list (benchmarks/workloads.py) is read only where it is used.
flags.DEFINE_list("algos", None, "algorithms to serve (default: every benchmark workload's, "
                  "in benchmarks/workloads.py's order)")
flags.DEFINE_list("requests", ["5x1", "20x5"], "request sizes, WAYSxSHOTS")
flags.DEFINE_integer("query_shots", 1, "query images per class in a request")
flags.DEFINE_integer("calls", 200, "timed calls per request", lower_bound=1)
flags.DEFINE_integer("warmup_calls", 10, "untimed calls after the first one")
flags.DEFINE_string("model_root", None, "time existing exports <model_root>/<algo>/<version> "
                    "instead of exporting fresh learners")
flags.DEFINE_string("signature", "serving_default", "the signature timed (serving_default, "
                    "encoded, preprocessed)")
# Checked in main against benchmarks/workloads.py (not importable by the timing worker).
flags.DEFINE_string("precision", "float32", "the fresh exports' precision: float32, bfloat16 "
                    "or float16 (mixed; float32 requests and answers)")
flags.DEFINE_string("workload", "default", "the fresh exports' workload set "
                    "(benchmarks/workloads.py): default, or paper (the papers' networks)")
flags.DEFINE_integer("source_size", 105, "side of the source images a signature that "
                     "preprocesses is sent (Omniglot's 105)")
flags.DEFINE_string("export_root", None, "where fresh exports go (default: a temporary "
                    "folder, removed at the end)")
# Internal: the two kinds of worker process this script starts.
flags.DEFINE_string("export_to", None, "(worker) export --algos for --requests here")
flags.DEFINE_string("time_model", None, "(worker) time this SavedModel")
flags.DEFINE_integer("ways", 5, "(worker) request ways")
flags.DEFINE_integer("shots", 1, "(worker) request shots")


def parse_requests(requests):
    """["5x1", "20x5"] -> [(5, 1), (20, 5)]."""
    try:
        return [tuple(int(n) for n in r.split("x")) for r in requests]
    except ValueError:
        raise app.UsageError(f"--requests must be WAYSxSHOTS, got {requests}") from None


def request_name(ways, shots):
    return f"{ways}-way {shots}-shot"


def all_algos(workload="default"):
    """Every algorithm of workload set `workload`, in the harness's order."""
    from benchmarks import workloads
    return list(workloads.algos(workload))


def served_learner(algo, ways, shots, precision="float32", workload="default"):
    """The learner served for `ways`x`shots` requests: built as a run builds it
    (`experiment.make_learner`) in `precision` from the algorithm's workload of set
    `workload` with episodes of that size."""
    from benchmarks import workloads
    from tf_meta import experiment
    config = workloads.run_config(
        algo, workloads.workload(algo, name=workload)._replace(ways=ways, shots=shots),
        precision=precision)
    return experiment.make_learner(config, workloads.INPUT_SHAPE)


def export_all(root, algos, requests, precision="float32", workload="default"):
    """Exports fresh learners in `precision` for every (algo, request) of workload set
    `workload` into `root`; prints a manifest line each.

    One export per algorithm serves every request when its learner takes any number of
    ways; otherwise one per request, with a head of the request's ways.
    """
    from benchmarks import workloads
    from tf_meta import export
    for algo in algos:
        done = {}
        for ways, shots in requests:
            learner = served_learner(algo, ways, shots, precision, workload)
            hyperparameters = learner.hyperparameter_values()  # as built
            key = None if learner.max_ways is None else (ways, shots)
            if key not in done:
                done[key] = export.export_learner(
                    learner, os.path.join(root, f"{algo}_{ways}way_{shots}shot"),
                    workloads.INPUT_SHAPE, version=1,
                    metadata={"algo": algo, "precision": learner.precision, **hyperparameters})
            print(json.dumps({"algo": algo, "ways": ways, "shots": shots, "path": done[key],
                              "precision": learner.precision, "workload": workload,
                              "head_ways": learner.max_ways,
                              "test_inner_steps": hyperparameters.get("test_inner_steps")}),
                  flush=True)


def time_model(path, ways, shots, query_shots, calls, warmup_calls,
               signature_name="serving_default", source_size=105):
    """The latency record of one SavedModel and request size, in a process without tf_meta."""
    if "tf_meta" in sys.modules:
        raise RuntimeError("the timing process must not import tf_meta")
    sys.modules["tf_meta"] = None  # as in TF Serving: any `import tf_meta` now fails
    import numpy as np
    import tensorflow as tf

    start = time.perf_counter()
    signature = tf.saved_model.load(path).signatures[signature_name]
    load_seconds = time.perf_counter() - start
    spec = signature.structured_input_signature[1]["support_images"]
    rng = np.random.default_rng(0)

    def images(n):
        drawings = np.where(rng.random((n, source_size, source_size, 1)) < 0.05, 0, 255)
        if spec.dtype == tf.string:  # encoded: PNG bytes
            return tf.constant([tf.io.encode_png(d.astype(np.uint8)).numpy()
                                for d in drawings])
        if spec.shape[1:].is_fully_defined():  # the model's own pixels, 0-255
            return tf.constant(rng.uniform(0, 255, (n, *spec.shape[1:])), tf.float32)
        return tf.constant(drawings, tf.float32)

    inputs = {"support_images": images(ways * shots),
              "support_labels": tf.constant(np.repeat(np.arange(ways), shots), tf.int32),
              "query_images": images(ways * query_shots)}

    def call():
        return {k: v.numpy() for k, v in signature(**inputs).items()}  # the answer is ready

    record = {"kind": "serving", "request": request_name(ways, shots), "ways": ways,
              "shots": shots, "query_shots": query_shots, "model": path,
              "signature": signature_name}
    start = time.perf_counter()
    try:
        logits = call()["logits"]
    except tf.errors.InvalidArgumentError as e:
        lines = e.message.splitlines()
        reason = next((line for line in lines if line.startswith("assertion failed")), lines[-1])
        return {**record, "p50_ms": None, "p99_ms": None,
                "note": "n/a: the model refused the request: " + reason}
    first_call = time.perf_counter() - start
    if logits.shape != (ways * query_shots, ways):
        raise ValueError(f"logits of shape {logits.shape} for a {ways}-way request")
    for _ in range(warmup_calls):
        call()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    ms = 1000 * np.asarray(seconds)
    return {**record, "calls": calls, "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "mean_ms": round(ms.mean(), 3),
            "max_ms": round(ms.max(), 3), "first_call_ms": round(1000 * first_call, 1),
            "load_seconds": round(load_seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "tensorflow": tf.__version__}


def run_json(command, env, cwd):
    """(JSON records on the command's stdout, error record or None)."""
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not records:
        return records, {"kind": "error", "what": "serving", "command": " ".join(command),
                         "returncode": result.returncode, "stderr_tail": result.stderr[-2000:]}
    return records, None


def export_precision(path):
    """The precision an export was trained in, from its assets.extra/tf_meta.json: the
    harness's "precision" entry or train.py's --precision flag; "float32" for a train.py
    export whose flags predate the setting (every learner was float32 then); None without
    that file."""
    try:
        with open(os.path.join(path, "assets.extra", "tf_meta.json")) as f:
            metadata = json.load(f)
    except FileNotFoundError:
        return None
    if "precision" in metadata:
        return metadata["precision"]
    for line in metadata.get("flags", []):
        if line.startswith("--precision="):
            return line.split("=", 1)[1]
    return "float32" if "flags" in metadata else None


def existing_exports(model_root, algos, requests):
    """Manifest rows for <model_root>/<algo>/<highest integer version>."""
    from tf_meta import export
    rows = []
    for algo in algos:
        base = os.path.join(os.path.abspath(model_root), algo)  # the timing process runs elsewhere
        latest = export.next_version(base) - 1  # 0: none (ASCII-digit folders only)
        path = os.path.join(base, str(latest)) if latest else None
        for ways, shots in requests:
            rows.append({"algo": algo, "ways": ways, "shots": shots, "path": path,
                         "precision": path and export_precision(path)})
    return rows


def serve_all(export_root, algos):
    """Exports (unless --model_root) and times every request; prints one record each."""
    requests = parse_requests(FLAGS.requests)
    env = dict(os.environ)
    ok = True
    if FLAGS.model_root:
        manifest = existing_exports(FLAGS.model_root, algos, requests)
    else:
        manifest, error = run_json(
            [sys.executable, "-m", "benchmarks.serving_latency", f"--export_to={export_root}",
             f"--algos={','.join(algos)}", f"--requests={','.join(FLAGS.requests)}",
             f"--precision={FLAGS.precision}", f"--workload={FLAGS.workload}"],
            env, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if error:
            print(json.dumps(error), flush=True)
            ok = False
    # The timing processes get no path to this checkout, besides blocking tf_meta.
    bare = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    for row in manifest:
        info = {k: row.get(k) for k in ("algo", "precision", "workload", "head_ways",
                                        "test_inner_steps") if k in row}
        if row["path"] is None:
            print(json.dumps({"kind": "serving", **info, "request": request_name(row["ways"],
                                                                                row["shots"]),
                              "p50_ms": None, "p99_ms": None,
                              "note": f"n/a: no export under {FLAGS.model_root}"}), flush=True)
            continue
        records, error = run_json(
            [sys.executable, os.path.abspath(__file__), f"--time_model={row['path']}",
             f"--ways={row['ways']}", f"--shots={row['shots']}",
             f"--query_shots={FLAGS.query_shots}", f"--calls={FLAGS.calls}",
             f"--warmup_calls={FLAGS.warmup_calls}", f"--signature={FLAGS.signature}",
             f"--source_size={FLAGS.source_size}"], bare, tempfile.gettempdir())
        if error:
            print(json.dumps({**error, "algo": row["algo"]}), flush=True)
            ok = False
            continue
        print(json.dumps({"kind": "serving", **info, **records[-1]}), flush=True)
    return ok


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.time_model:  # before anything of this checkout is imported
        print(json.dumps(time_model(FLAGS.time_model, FLAGS.ways, FLAGS.shots, FLAGS.query_shots,
                                    FLAGS.calls, FLAGS.warmup_calls, FLAGS.signature,
                                    FLAGS.source_size)), flush=True)
        return
    from benchmarks import workloads
    if FLAGS.model_root and (FLAGS["precision"].present or FLAGS["workload"].present):
        raise app.UsageError("--precision and --workload choose fresh exports; with "
                             "--model_root each export's own precision is recorded")
    if FLAGS.precision not in workloads.PRECISIONS:
        raise app.UsageError(f"--precision={FLAGS.precision}: choose from "
                             f"{', '.join(workloads.PRECISIONS)}")
    if FLAGS.workload not in workloads.WORKLOADS:
        raise app.UsageError(f"--workload={FLAGS.workload}: choose from "
                             f"{', '.join(workloads.WORKLOADS)}")
    known = all_algos(FLAGS.workload)
    algos = FLAGS.algos or known
    unknown = sorted(set(algos) - set(known))
    if unknown:
        raise app.UsageError(f"unknown --algos {unknown} for --workload={FLAGS.workload}; "
                             f"choose from {known}")
    if FLAGS.export_to:
        export_all(FLAGS.export_to, algos, parse_requests(FLAGS.requests), FLAGS.precision,
                   FLAGS.workload)
    elif FLAGS.export_root:
        sys.exit(0 if serve_all(FLAGS.export_root, algos) else 1)
    else:
        with tempfile.TemporaryDirectory(prefix="tf_meta_serving_") as root:
            ok = serve_all(root, algos)
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    app.run(main)
