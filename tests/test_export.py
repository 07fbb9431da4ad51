"""The TF Serving export, checked the way TF Serving sees it: another process, no tf_meta."""

import functools
import errno
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from conftest import ROOT
from tf_meta import ALGORITHMS, build_learner, data, export
from tf_meta.algorithms import MANN, ProtoNet, Reptile, learner_class
from tf_meta.episode import Episode

# Ten Omniglot test images as the training source's pixels (serving contract 1), the
# README's request for the preprocessed signature (tests/example_requests.py).
REQUEST = ROOT / "docs" / "example_request_preprocessed.json"
PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


ADAPTIVE = [algo for algo in ALGORITHMS if learner_class(algo).ADAPTS]  # with an inner loop


# Reptile's test-time loop is a tf.while_loop whose 50 Adam steps run, eagerly in memory and
# in each served request, for every answer below: 5 steps adapt as visibly. MAML's is
# unrolled, each step more graph to trace in each of an export's signatures: one step.
SMALL = {"reptile": dict(test_inner_steps=5), "maml": dict(test_inner_steps=1),
         "fomaml": dict(test_inner_steps=1)}


@functools.lru_cache(maxsize=None)
def trained(algo):
    """A learner after a few training steps, so BatchNorm statistics are not the defaults."""
    keras.utils.set_random_seed(0)
    learner = build_learner(algo, (28, 28, 1), ways=5, **SMALL.get(algo, {}))
    learner.compile(optimizer=learner.meta_optimizer(1e-3, 10, 10, 1.0))
    source = data.synthetic(20, 10, (28, 28, 1))
    learner.fit(data.make_episode_dataset(source, 5, 1, 2, 2, seed=0), steps_per_epoch=2,
                epochs=1, verbose=0)
    return learner


@pytest.fixture(scope="module", params=list(ALGORITHMS))
def learner(request):
    return trained(request.param)


@pytest.fixture(scope="module", params=ADAPTIVE)
def adaptive(request):
    return trained(request.param)


def export_to(learner, tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models") / "model"
    return export.export_learner(learner, str(base), (28, 28, 1), metadata={"algo": "x"})


@pytest.fixture(scope="module")
def export_of(tmp_path_factory):
    """learner -> its export_to path, written on first use (each learner once a module)."""
    paths = {}

    def export_of(learner):
        if id(learner) not in paths:  # trained() keeps each learner alive: ids stay unique
            paths[id(learner)] = export_to(learner, tmp_path_factory)
        return paths[id(learner)]

    return export_of


@pytest.fixture(scope="module")
def exported(learner, export_of):
    return export_of(learner)


class Server:
    """serve_like_tf_serving.py as a server: another process, which cannot import tf_meta,
    loading each export it is sent, as TF Serving does. One for the module: a TensorFlow
    start-up for each of the ~20 requests below cost ~4 s of CPU each."""

    def __init__(self, folder):
        self.folder, self.process = folder, None

    def start(self):
        self.stderr = open(self.folder / "stderr.txt", "w+")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "serve_like_tf_serving.py"), "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
            cwd=self.folder, env=dict(os.environ, PYTHONPATH=""))

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.stderr.close()
            self.process = None

    def __call__(self, model_dir, body, tmp_path):
        """The response to the REST body `body` of the export `model_dir`."""
        if self.process is None or self.process.poll() is not None:
            self.stop()
            self.start()  # again after a request that crashed it: each test its own answer
        request = tmp_path / "request.json"
        request.write_text(json.dumps(body))
        self.process.stdin.write(json.dumps([model_dir, str(request)]) + "\n")
        self.process.stdin.flush()
        answered, _, _ = select.select([self.process.stdout], [], [], 120)
        line = self.process.stdout.readline() if answered else ""
        if not line:  # it died, or hung
            self.process.kill()
            self.process.wait()
            self.stderr.seek(0)
            error = self.stderr.read()[-2000:]
            self.stop()
            pytest.fail(f"no answer from {model_dir}: {error}")
        return json.loads(line)["outputs"]


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("server"))
    yield server
    server.stop()


def in_memory(learner, body, transductive=False):
    """The in-memory answer the export serves: each query on its own, or the learner's test."""
    inputs = body["inputs"]
    episode = Episode(tf.constant(inputs["support_images"], tf.float32),
                      tf.constant(inputs["support_labels"], tf.int32),
                      tf.constant(inputs["query_images"], tf.float32), tf.zeros([0], tf.int32))
    if transductive:
        return learner.query_logits(episode, training=False).numpy()
    return learner.independent_query_logits(episode).numpy()


def assert_same_logits(actual, expected, learner):
    # Reptile's Adam steps divide by running gradient norms, which amplifies float32
    # rounding differences between graph and eager kernels to ~1e-3 of the logits.
    atol = 2e-2 if isinstance(learner, Reptile) else 1e-3
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=atol)


def test_round_trip_without_tf_meta_answers_the_readme_request(learner, exported, tmp_path, serve):
    body = json.loads(REQUEST.read_text())
    outputs = serve(exported, body, tmp_path)
    logits = in_memory(learner, body)
    assert logits.shape == (5, 5)
    assert_same_logits(outputs["logits"], logits, learner)
    served = np.asarray(outputs["logits"])  # the learner's own probabilities of its logits
    np.testing.assert_allclose(outputs["probabilities"], learner.probabilities(served),
                               atol=1e-6)
    assert outputs["classes"] == np.argmax(served, axis=-1).tolist()


def test_one_odd_query_never_changes_the_answers_to_the_others(learner, exported, tmp_path):
    """Served by default, each query is answered on its own: a bright blot (pixels 255, in
    range) among the queries leaves every other answer as it was, for every algorithm."""
    body = json.loads(REQUEST.read_text())
    queries = body["inputs"]["query_images"]
    blotted = dict(body["inputs"], query_images=[np.full_like(queries[0], 255.0).tolist(),
                                                 *queries[1:]])
    before = serve_in_process(exported, body)
    after = serve_in_process(exported, {"inputs": blotted})
    np.testing.assert_allclose(after[1:], before[1:], rtol=1e-5, atol=1e-5)
    meta = json.loads(open(os.path.join(exported, "assets.extra", "tf_meta.json")).read())
    assert meta["queries"] == "each on its own"


def test_a_transductive_export_serves_the_learner_s_own_test(learner, tmp_path):
    """Opt-in: the papers' transductive test (MAML, Reptile, RelationNet: all queries one
    BatchNorm batch, so the blot then does move the other answers)."""
    path = export.export_learner(learner, str(tmp_path / "model"), (28, 28, 1),
                                 transductive=True)
    body = json.loads(REQUEST.read_text())
    assert_same_logits(serve_in_process(path, body),
                       in_memory(learner, body, transductive=True), learner)


def serve_in_process(path, body):
    """serving_default's logits for a REST body's inputs, loaded in this process."""
    served = tf.saved_model.load(path).signatures["serving_default"]
    inputs = body["inputs"]
    return served(support_images=tf.constant(inputs["support_images"], tf.float32),
                  support_labels=tf.constant(inputs["support_labels"], tf.int32),
                  query_images=tf.constant(inputs["query_images"], tf.float32))["logits"].numpy()


def test_one_export_answers_any_ways_and_shots(learner, exported, tmp_path, serve):
    """Any N for ProtoNet; up to the head's 5 classes for the MAML family."""
    ways = 20 if isinstance(learner, ProtoNet) else 3
    source = data.synthetic(30, 10, (28, 28, 1), seed=4)
    episode = next(iter(data.make_episode_dataset(source, ways, 3, 2, 1, seed=2)))
    body = export.request_body(episode.support_x[0], episode.support_y[0], episode.query_x[0])
    outputs = serve(exported, body, tmp_path)
    assert np.asarray(outputs["logits"]).shape == (2 * ways, ways)
    assert_same_logits(outputs["logits"], in_memory(learner, body), learner)


def test_the_maml_family_adapts_inside_the_served_graph(adaptive, export_of, tmp_path, serve):
    learner, exported = adaptive, export_of(adaptive)
    body = json.loads(REQUEST.read_text())
    outputs = np.asarray(serve(exported, body, tmp_path)["logits"])
    inputs = body["inputs"]
    unadapted = learner(tf.constant(inputs["query_images"], tf.float32), training=True)
    assert np.abs(outputs - unadapted.numpy()).max() > 1e-3  # the support set changed θ
    relabelled = dict(inputs, support_labels=[(y + 1) % 5 for y in inputs["support_labels"]])
    moved = np.asarray(serve(exported, {"inputs": relabelled}, tmp_path)["logits"])
    assert np.abs(moved - outputs).max() > 1e-3  # the answer depends on the support labels
    assert_same_logits(moved, in_memory(learner, {"inputs": relabelled}), learner)


def test_the_adapted_learner_exports_as_a_plain_classifier(adaptive, tmp_path, serve):
    learner = adaptive
    inputs = json.loads(REQUEST.read_text())["inputs"]
    support_x = tf.constant(inputs["support_images"], tf.float32)
    support_y = tf.constant(inputs["support_labels"], tf.int32)
    path = export.export_adapted(learner, support_x, support_y, str(tmp_path / "adapted"))
    outputs = serve(path, {"inputs": {"images": inputs["query_images"]}}, tmp_path)
    query_x = tf.constant(inputs["query_images"], tf.float32)
    fast = learner.adapt(support_x, support_y, training=False)
    logits = learner.independent_score(fast, Episode(support_x, support_y, query_x, None))
    np.testing.assert_allclose(outputs["probabilities"], learner.probabilities(logits),
                               atol=1e-4)
    assert outputs["classes"] == np.argmax(logits, axis=-1).tolist()


def assert_lists_the_serving_signature(shown):
    """`shown`: saved_model_cli's `show --all` of an export of a 28x28x1 learner."""
    signature = shown.split("signature_def['serving_default']")[1]
    for name in ("support_images", "support_labels", "query_images", "logits",
                 "probabilities", "classes"):
        assert f"['{name}']" in signature
    assert "shape: (-1, 28, 28, 1)" in signature and "tensorflow/serving/predict" in signature


def test_saved_model_cli_lists_the_serving_signature(export_of):
    """The tool itself, once (each start of it is a TensorFlow start-up of ~5 s); what it
    shows of every algorithm's export is the next test's."""
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", export_of(trained("protonet")), "--all"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert_lists_the_serving_signature(shown.stdout)


def test_every_export_shows_its_serving_signature_in_saved_model_cli(exported, capsys):
    from tensorflow.python.tools import saved_model_cli  # what `show --all` runs
    saved_model_cli._show_all(exported)
    assert_lists_the_serving_signature(capsys.readouterr().out)


def test_graph_holds_no_python_ops(learner, exported):
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(exported, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    graph = saved.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    model_op = "MatMul" if isinstance(learner, MANN) else "Conv2D"  # MANN reads raw pixels
    assert model_op in ops and not ops & PYTHON_OPS


def test_an_export_records_its_metadata(learner, exported):
    meta = json.loads(open(os.path.join(exported, "assets.extra", "tf_meta.json")).read())
    head = min(learner.max_ways or 100, 100)
    assert meta == {"algo": "x", "queries": "each on its own", "image_contract": None,
                    "request_bounds": {"max_support": 1000, "max_queries": 1000,
                                       "max_ways": head, "max_values": 2 ** 26},
                    "serving_contract": 2,
                    "signatures": {name: ["support_images", "support_labels", "query_images"]
                                   for name in ("preprocessed", "serving_default")}
                    | {"named": ["support_images", "support_labels", "query_images",
                                 "support_class_names"]}}


def test_versions_are_integers_and_the_first_keeps_its_metadata(export_of, tmp_path):
    """The first export into its base path is version 1; a second export beside it (into a
    copy, so the module's export stays alone) is version 2. Versions are the export's, not
    the algorithm's: one algorithm (the cheapest to export) checks them."""
    learner = trained("protonet")
    exported = export_of(learner)
    base = tmp_path / "model"
    shutil.copytree(os.path.dirname(exported), base)
    second = export.export_learner(learner, str(base), (28, 28, 1))
    assert (os.path.basename(exported), os.path.basename(second)) == ("1", "2")
    assert sorted(os.listdir(base)) == ["1", "2"]
    meta = json.loads((base / "1" / "assets.extra" / "tf_meta.json").read_text())
    assert meta["algo"] == "x"
    assert "algo" not in json.loads((base / "2" / "assets.extra" / "tf_meta.json").read_text())


def fail_after_writing(monkeypatch, error):
    """Makes each export write its SavedModel completely, then raise `error`.

    Patched on the ExportArchive that export.py writes with, not on tf.saved_model.save:
    Keras's write_out runs `from tensorflow.saved_model.experimental import ...`, and the
    first such import in a process loads tensorflow.saved_model anew as another module object
    and rebinds tf.saved_model to it, so a patched `save` on the old one would go uncalled
    in a process's first export (this test alone, or first, passed through the real save).
    """
    archive_class = type(keras.export.ExportArchive())  # a factory: the backend's class
    real_write_out = archive_class.write_out

    def write_then_fail(archive, filepath, *args, **kwargs):
        real_write_out(archive, filepath, *args, **kwargs)  # a complete write, then the failure
        raise error

    monkeypatch.setattr(archive_class, "write_out", write_then_fail)


def test_request_bounds_are_set_at_export_recorded_and_enforced(tmp_path):
    learner = trained("protonet")
    path = export.export_learner(learner, str(tmp_path / "model"), (28, 28, 1), max_support=6,
                                 max_queries=4, max_ways=3)
    meta = json.loads(open(os.path.join(path, "assets.extra", "tf_meta.json")).read())
    assert meta["request_bounds"] == {"max_support": 6, "max_queries": 4, "max_ways": 3,
                                      "max_values": 2 ** 26}
    signature = tf.saved_model.load(path).signatures["serving_default"]
    rng = np.random.default_rng(0)

    def request(support, queries, ways):
        return signature(
            support_images=tf.constant(rng.uniform(0, 255, (support, 28, 28, 1)), tf.float32),
            support_labels=tf.constant(np.arange(support) % ways, tf.int32),
            query_images=tf.constant(rng.uniform(0, 255, (queries, 28, 28, 1)), tf.float32))

    assert request(6, 4, 3)["logits"].shape == (4, 3)  # at every bound: answered
    for sizes, message in [((7, 4, 3), "support images above max_support=6, the bound of this "
                            "export: re-export with export_learner(..., max_support=<more>)"),
                           ((6, 5, 3), "query images above max_queries=4"),
                           ((6, 4, 4), "ways above max_ways=3")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
            request(*sizes)


def test_only_ascii_digit_folders_are_versions(tmp_path):
    base = tmp_path / "model"
    for name in ("\u00b2", "1a", ".tmp-3", "\u0663", "7 ", "-2"):  # ², Arabic-Indic 3
        (base / name).mkdir(parents=True)
    assert export.next_version(str(base)) == 1
    (base / "7").mkdir()
    assert export.next_version(str(base)) == 8
    learner = build_learner("protonet", (28, 28, 1))
    assert export.export_learner(learner, str(base), (28, 28, 1)) == str(base / "8")


RACE = """
import os, sys, time
from tf_meta import build_learner, export
learner = build_learner("protonet", (28, 28, 1))
open(sys.argv[2], "w").close()  # ready
while not os.path.exists(sys.argv[3]):  # both start exporting within 10 ms
    time.sleep(0.01)
print(export.export_learner(learner, sys.argv[1], (28, 28, 1)))
"""


def test_two_exports_to_one_base_path_at_once_both_succeed(tmp_path):
    base, go = tmp_path / "model", tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    racers = [subprocess.Popen([sys.executable, "-c", RACE, str(base), str(r), str(go)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env) for r in ready]
    try:
        deadline = time.time() + 240
        while not all(r.exists() for r in ready) and time.time() < deadline:
            time.sleep(0.05)
        go.touch()
        done = [r.communicate(timeout=240) for r in racers]
    finally:
        for racer in racers:
            racer.kill()
    assert [r.returncode for r in racers] == [0, 0], [err.splitlines()[-3:] for _, err in done]
    assert sorted(out.strip() for out, _ in done) == [str(base / "1"), str(base / "2")]
    assert sorted(os.listdir(base)) == ["1", "2"]
    for version in ("1", "2"):
        tf.saved_model.load(str(base / version))  # each a complete SavedModel


def test_a_version_taken_between_choosing_and_claiming_it_goes_to_the_next(tmp_path,
                                                                          monkeypatch):
    """The race's losing side, made certain: another export renames its version 1 into place
    after this one counted the versions."""
    base = tmp_path / "model"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"the other export")
    counts = iter([1])
    real = export.next_version
    monkeypatch.setattr(export, "next_version", lambda path: next(counts, None) or real(path))
    path = export.export_learner(trained("protonet"), str(base), (28, 28, 1))
    assert path == str(base / "2") and sorted(os.listdir(base)) == ["1", "2"]
    assert (base / "1" / "saved_model.pb").read_bytes() == b"the other export"


# A failed export is the export's own cleanup, the same for every algorithm: checked on
# ProtoNet's, for an OSError without an errno too.
@pytest.mark.parametrize("error,cause", [
    (OSError("disk full"), "disk full"),
    (tf.errors.ResourceExhaustedError(None, None, "saved_model.pb; No space left on device"),
     "No space left on device"),
    (OSError(errno.EROFS, "Read-only file system", "saved_model.pb"), "Read-only file system"),
], ids=["an OSError", "disk full", "read-only"])
def test_an_os_error_during_export_is_one_line_naming_the_path_and_leaves_nothing(
        error, cause, tmp_path, monkeypatch):
    fail_after_writing(monkeypatch, error)
    base = str(tmp_path / "model")
    with pytest.raises(OSError) as raised:  # train.py prints an OSError as one line
        export.export_learner(trained("protonet"), base, (28, 28, 1))
    message = str(raised.value)
    assert message.startswith(f"cannot export to {base!r}: ") and "\n" not in message
    assert cause in message
    assert os.listdir(base) == []


def test_weights_holding_nan_or_inf_are_never_exported(tmp_path):
    """A NaN SavedModel answered every request (issue 15: a run that diverged behind a finite
    loss exported one)."""
    learner = build_learner("protonet", (28, 28, 1))
    kernel = learner.trainable_variables[0]
    kernel.assign(np.where(np.arange(kernel.shape.num_elements()).reshape(kernel.shape) == 7,
                           np.inf, kernel.numpy()))
    with pytest.raises(ValueError, match=r"cannot export to '.*': 1 variables hold NaN or Inf"):
        export.export_learner(learner, str(tmp_path / "model"), (28, 28, 1))
    assert not (tmp_path / "model").exists()
