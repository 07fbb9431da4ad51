"""Bad serving requests: every exported algorithm refuses each one, naming the problem.

The specification is BAD_REQUESTS (and docs/BAD_INPUT.md): a request the model cannot answer
meaningfully raises InvalidArgumentError from the served graph itself, so TF Serving, which
runs the graph without tf_meta and without the signature's Python-side shape checks, refuses
it too, instead of answering garbage or aborting on a wrong-rank convolution.
"""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT
from tf_meta import ALGORITHMS, build_learner, export
from tf_meta.algorithms import learner_class

HEAD = 5  # the output head of the learners that have one (MAML, FOMAML, Reptile, MANN, SNAIL)
ALGOS = list(ALGORITHMS)
HEADLESS = [algo for algo in ALGOS if not learner_class(algo).HAS_HEAD]  # any number of ways
# Short inner loops and a small memory: the checks, not the learners, are under test.
TINY = {"maml": dict(test_inner_steps=1), "fomaml": dict(test_inner_steps=1),
        "reptile": dict(test_inner_steps=1),
        "mann": dict(controller_units=16, memory_slots=8, memory_width=8, read_heads=1)}
SHAPE_ERROR = "is not compatible with expected shape"


def good_request(ways=3, shots=2, queries=4, size=28):
    """A valid 3-way 2-shot request: numpy arrays in the signature's dtypes."""
    rng = np.random.default_rng(0)
    return {"support_images": rng.uniform(0, 255, (ways * shots, size, size, 1)).astype("f4"),
            "support_labels": np.repeat(np.arange(ways, dtype=np.int32), shots),
            "query_images": rng.uniform(0, 255, (queries, size, size, 1)).astype("f4")}


def labels(*values):
    return lambda r: r.update(support_labels=np.array(values, np.int32))


def pixel(name, value):
    def change(r):
        r[name][0, 3, 4, 0] = value
    return change


def head_or(message):
    """The message when a fixed head is exceeded; `message` for ProtoNet and RelationNet."""
    return {"head": f"support_labels must be below {HEAD}, the ways of the exported head",
            "headless": message}


def scaled(*names):
    """The commonest client mistake: pixels divided by 255 (here in `names`)."""
    return lambda r: r.update({name: r[name] / 255 for name in names})


def binary(r):
    """Black-and-white images sent as 0 and 1 instead of 0 and 255."""
    r.update({name: (r[name] > 127).astype("f4") for name in ("support_images", "query_images")})


def larger(name, size):
    """`name` grown to `size` images of mid-grey, labels cycling over 3 classes."""
    def change(r):
        r[name] = np.full((size, 28, 28, 1), 128, "f4")
        if name == "support_images":
            r["support_labels"] = np.arange(size, dtype=np.int32) % 3
    return change


UNCOVERED = "support_labels must cover 0..ways-1, each class at least once"
RANGE = "must be pixels in [0, 255]"
SCALED = "looks scaled to [0, 1] (its largest pixel is <= 1): send pixels 0-255, multiply by 255"
BOUND = "the bound of this export: re-export with export_learner(..., {name}=<more>) to serve more"
# (row, change to the good request, message stem). In JSON (TF Serving's REST API) a row's
# message can differ where JSON cannot say it: see JSON_MESSAGE.
BAD_REQUESTS = [
    ("label above the head's ways", labels(0, 1, 2, 0, 1, 9), head_or(UNCOVERED)),
    ("negative label", labels(0, 1, 2, 0, 1, -1), "support_labels must be >= 0"),
    ("non-contiguous labels {0, 2}", labels(0, 2, 0, 2, 0, 2), UNCOVERED),
    ("a class with no support example", labels(0, 1, 3, 0, 1, 3), UNCOVERED),
    ("query images 20x20, support 28x28",
     lambda r: r.update(query_images=r["query_images"][:, :20, :20]),
     "Shape of tensor query_images [4,20,20,1] " + SHAPE_ERROR),
    ("all images 20x20, the export's are 28x28",
     lambda r: r.update(support_images=r["support_images"][:, :20, :20],
                        query_images=r["query_images"][:, :20, :20]),
     "20,20,1] is not compatible with expected shape [?,28,28,1]"),  # either input first
    ("one query image without the batch axis (rank 3)",
     lambda r: r.update(query_images=r["query_images"][0]),
     "Shape of tensor query_images [28,28,1] " + SHAPE_ERROR),
    ("support images with an extra axis (rank 5)",
     lambda r: r.update(support_images=r["support_images"][None]),
     "Shape of tensor support_images [1,6,28,28,1] " + SHAPE_ERROR),
    ("support labels as a column [S, 1] (rank 2)",
     lambda r: r.update(support_labels=r["support_labels"][:, None]),
     "Shape of tensor support_labels [6,1] " + SHAPE_ERROR),
    ("NaN pixel in the support set", pixel("support_images", np.nan),
     "support_images has NaN or Inf"),
    ("Inf pixel in the support set", pixel("support_images", np.inf),
     "support_images has NaN or Inf"),
    ("NaN pixel in the query set", pixel("query_images", np.nan), "query_images has NaN or Inf"),
    ("-Inf pixel in the query set", pixel("query_images", -np.inf),
     "query_images has NaN or Inf"),
    ("empty support set",
     lambda r: r.update(support_images=r["support_images"][:0],
                        support_labels=r["support_labels"][:0]), "support set is empty"),
    ("empty query set", lambda r: r.update(query_images=r["query_images"][:0]),
     "query set is empty"),
    ("more support images than labels",
     lambda r: r.update(support_labels=r["support_labels"][:-1]),
     "support_images and support_labels differ in length"),
    ("a finite pixel far above 255 (1e30)", pixel("support_images", 1e30),
     "support_images " + RANGE),
    ("a negative pixel in the query set", pixel("query_images", -1.0), "query_images " + RANGE),
    ("query images scaled to [0, 1]", scaled("query_images"), "query_images " + SCALED),
    ("every image scaled to [0, 1]", scaled("support_images", "query_images"), SCALED),
    ("black-and-white images as 0 and 1", binary, SCALED),
    ("101 ways, above the bound of 100", lambda r: r.update(
        support_images=np.full((101, 28, 28, 1), 128, "f4"),
        support_labels=np.arange(101, dtype=np.int32)),
     head_or("ways above max_ways=100, " + BOUND.format(name="max_ways"))),
    ("1001 support images, above the bound of 1000", larger("support_images", 1001),
     "support images above max_support=1000, " + BOUND.format(name="max_support")),
    ("1001 query images, above the bound of 1000", larger("query_images", 1001),
     "query images above max_queries=1000, " + BOUND.format(name="max_queries")),
]
# Rejected by the function call before the graph runs (TF Serving's REST API converts JSON to
# the signature's dtypes, so only a gRPC client can send these).
WRONG_DTYPES = [
    ("int64 labels", "support_labels", np.int64, "expected to be a int32 tensor but is a int64"),
    ("float64 pixels", "query_images", np.float64,
     "expected to be a float tensor but is a double"),
    ("uint8 pixels", "support_images", np.uint8, "expected to be a float tensor but is a uint8"),
]
# An empty JSON list has no inner dimensions: TF Serving reads `[]` as a [0] tensor.
JSON_MESSAGE = {"empty support set": "Shape of tensor support_images [0] " + SHAPE_ERROR,
                "empty query set": "Shape of tensor query_images [0] " + SHAPE_ERROR}


def expected(message, algo):
    if isinstance(message, dict):
        return message["headless" if algo in HEADLESS else "head"]
    return message


def bad_request(change):
    request = good_request()
    change(request)
    return request


@pytest.fixture(autouse=True)
def seeded():
    """No reseeding per test (conftest's): tf.random.set_seed clears TF's caches, so every
    test would instantiate the reloaded functions again (~1 s each). Nothing here is random
    but the export, which seeds itself, and good_request, which has its own generator."""


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """algo -> its SavedModel version folder; each algorithm exported once, untrained."""
    keras.utils.set_random_seed(0)
    base = tmp_path_factory.mktemp("saved_models")
    return {algo: export.export_learner(
        build_learner(algo, (28, 28, 1), ways=HEAD, **TINY.get(algo, {})), str(base / algo),
        (28, 28, 1)) for algo in ALGOS}


@pytest.fixture(scope="module")
def signatures(exports):
    """algo -> the plain `serving_default` function of its reloaded SavedModel."""
    return {algo: tf.saved_model.load(path).signatures["serving_default"]
            for algo, path in exports.items()}


def call(signature, request):
    return signature(**{name: tf.constant(value) for name, value in request.items()})


@pytest.mark.parametrize("algo", ALGOS)
def test_the_good_request_is_answered(signatures, algo):
    """The control: the rows below fail because of their one change, not the request."""
    logits = call(signatures[algo], good_request())["logits"].numpy()
    assert logits.shape == (4, 3) and np.isfinite(logits).all()


@pytest.mark.parametrize("row,change,message", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
@pytest.mark.parametrize("algo", ALGOS)
def test_bad_request_fails_inside_the_graph_naming_the_problem(signatures, algo, row, change,
                                                                message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(expected(message, algo))):
        call(signatures[algo], bad_request(change))


@pytest.mark.parametrize("row,name,dtype,message", WRONG_DTYPES, ids=[r[0] for r in WRONG_DTYPES])
@pytest.mark.parametrize("algo", ALGOS)
def test_wrong_dtype_is_refused_by_the_signature(signatures, algo, row, name, dtype, message):
    request = good_request()
    request[name] = request[name].astype(dtype)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        call(signatures[algo], request)


@pytest.mark.parametrize("algo", ALGOS)
def test_more_ways_than_the_head_fail_only_where_there_is_a_head(signatures, algo):
    request = good_request(ways=HEAD + 1, shots=1)  # labels 0..5, every class present
    if algo in HEADLESS:
        assert call(signatures[algo], request)["logits"].shape == (4, HEAD + 1)
    else:
        with pytest.raises(tf.errors.InvalidArgumentError, match="the ways of the exported head"):
            call(signatures[algo], request)


def test_without_tf_meta_every_export_refuses_every_row(exports, tmp_path):
    """TF Serving's view: another process, no tf_meta, JSON bodies, errors as responses."""
    rows = [("good request", lambda r: None, None)] + BAD_REQUESTS
    paths = []
    for i, (row, change, _) in enumerate(rows):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(export.request_body(**bad_request(change))))
    # One process answers for every export (a TensorFlow start-up each would cost ~5 s), and
    # reads each body once (parsing the 1001-image ones for every export took 20 s of CPU).
    program = ("import sys; sys.path.insert(0, sys.argv[1]); import serve_like_tf_serving as s\n"
               "bodies = [s.read(path) for path in sys.argv[3:]]\n"
               "for model in sys.argv[2].split(','): s.answer(model, bodies)")
    done = subprocess.run([sys.executable, "-c", program, str(ROOT / "tests"),
                           ",".join(exports.values()), *map(str, paths)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300, env=dict(os.environ, PYTHONPATH=""))
    assert done.returncode == 0, done.stderr[-2000:]
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(exports) * len(rows)
    for i, algo in enumerate(exports):
        mine = answers[i * len(rows):(i + 1) * len(rows)]
        assert np.asarray(mine[0]["outputs"]["logits"]).shape == (4, 3), algo
        for (row, _, message), answer in zip(rows[1:], mine[1:]):
            message = JSON_MESSAGE.get(row, expected(message, algo))
            assert all(part in answer.get("error", "") for part in as_tf_serving(message)), (
                algo, row, answer)


def as_tf_serving(message):
    """The parts of `message` TF Serving's answer holds: its session feeds input <x> as the
    tensor _arg_serving_default_<x>_0_<k>, which EnsureShape's message names instead of <x>."""
    prefix = "Shape of tensor "
    if not message.startswith(prefix):
        return [message]
    name, rest = message[len(prefix):].split(" ", 1)
    return [f"{prefix}_arg_serving_default_{name}_0_", f" {rest}"]


@pytest.mark.parametrize("algo", ALGOS)
def test_black_images_and_the_ends_of_the_range_are_answered(signatures, algo):
    """The pixel checks' controls: all-zero images are the same under either scale, so they
    are answered; so are pixels of exactly 0 and 255, and a query set of one faint image."""
    request = good_request()
    request["query_images"][:] = 0
    assert np.isfinite(call(signatures[algo], request)["logits"].numpy()).all()
    request["support_images"][:] = 0
    assert np.isfinite(call(signatures[algo], request)["logits"].numpy()).all()
    request["support_images"][:, 3:9, 3:9] = 255
    request["query_images"] = request["query_images"][:1] + 1.5
    assert call(signatures[algo], request)["logits"].shape == (1, 3)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """The plain `serving_default` of a MAML export adapted to the good request's support."""
    keras.utils.set_random_seed(0)
    learner = build_learner("maml", (28, 28, 1), ways=HEAD, test_inner_steps=1)
    request = good_request()
    path = export.export_adapted(learner, request["support_images"], request["support_labels"],
                                 str(tmp_path_factory.mktemp("adapted") / "maml"))
    return tf.saved_model.load(path).signatures["serving_default"]


def test_the_adapted_export_refuses_pixels_outside_0_255_and_too_many_images(adapted):
    images = good_request()["query_images"]
    for bad, message in [(images * 1e28, "images " + RANGE), (images - 300, "images " + RANGE),
                         (images / 255, "images " + SCALED),
                         (np.full((1001, 28, 28, 1), 128, "f4"),
                          "images above max_queries=1000, the bound of this export: re-export with "
                          "export_adapted(..., max_queries=<more>) to serve more")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
            adapted(images=tf.constant(bad))
    assert adapted(images=tf.zeros([2, 28, 28, 1]))["classes"].shape == (2,)


def test_the_adapted_export_refuses_wrong_shapes_and_non_finite_pixels(adapted):
    signature, request = adapted, good_request()
    assert signature(images=tf.constant(request["query_images"]))["classes"].shape == (4,)
    with pytest.raises(tf.errors.InvalidArgumentError, match=SHAPE_ERROR):
        signature(images=tf.constant(request["query_images"][0]))
    request["query_images"][1, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="images has NaN or Inf"):
        signature(images=tf.constant(request["query_images"]))
