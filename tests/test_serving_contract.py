"""The serving contract as TF Serving sees it: REST bodies (columnar and row), gRPC
PredictRequests and saved_model_cli, each answered outside this process, and each agreeing
with the learner in memory.

REST and gRPC requests are answered by tests/serve_like_tf_serving.py, which cannot import
tf_meta and converts requests by TF Serving's rules (its docstring lists them, with their
source files); saved_model_cli is TensorFlow's own. The export takes images as the source
provides them: Omniglot-like dark strokes on white, 35x35 RGB uint8, which the contract
(grayscale, inverted, resized to 28x28) turns into the model's pixels inside the graph.
"""

import base64
import json
import os
import re
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from conftest import ROOT
from tf_meta import build_learner, data, export
from tf_meta.data import images
from tf_meta.episode import Episode

CONTRACT = data.ImageContract(28, 28, 1, invert=True,
                              source="Omniglot-like: 35x35x3 uint8, dark strokes on white")
WAYS = 5
NAMES = ["Bengali", "Futurama", "Greek/Ω", "Hebrew", "Korean"]  # of support labels 0..4
LABELS = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]  # 5-way 2-shot: S = 10 support images
QUERY_CLASSES = [2, 0, 4, 1]  # Q = 4 queries: S != Q, as in most episodes
EPISODE_SIGNATURES = ["serving_default", "encoded", "named", "encoded_named", "preprocessed"]
HELPER = ROOT / "tests" / "serve_like_tf_serving.py"
CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


def source_images(seed=0):
    """(support [10, 35, 35, 3], query [4, 35, 35, 3]) uint8 as the source provides them:
    each class a stroke pattern, each image that pattern with 2% of its pixels flipped."""
    rng = np.random.default_rng(seed)
    strokes = np.kron(rng.random((WAYS, 7, 7)) < 0.3, np.ones((5, 5), bool))  # [5, 35, 35]

    def drawn(classes):
        marks = strokes[classes] ^ (rng.random((len(classes), 35, 35)) < 0.02)
        return np.repeat(np.where(marks, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)

    return drawn(LABELS), drawn(QUERY_CLASSES)


SUPPORT, QUERY = source_images()
# A 5-way 1-shot episode with 5 queries (S == Q): the first and the second shot of each class.
ONE_SHOT = SUPPORT[:5], LABELS[:5], SUPPORT[5:]


def model_pixels(source):
    """The training preprocessing, in this process: what the learner sees."""
    return images.to_model_pixels(tf.constant(source), CONTRACT).numpy()


def png(source):
    return [tf.io.encode_png(image).numpy() for image in source]


def b64(encoded):
    """Bytes as TF Serving's REST API takes them for a string input."""
    return [{"b64": base64.b64encode(b).decode("ascii")} for b in encoded]


def confident(probabilities):
    """The answers are no near ties, so comparing classes across processes means something."""
    top2 = np.sort(probabilities, axis=-1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] > 1e-3).all(), probabilities
    return probabilities


def episode_in_memory(learner, support, labels, query):
    """The learner's answer in memory, on the model pixels of source images."""
    episode = Episode(tf.constant(model_pixels(support)), tf.constant(labels, tf.int32),
                      tf.constant(model_pixels(query)), tf.zeros([len(query)], tf.int32))
    outputs = {k: v.numpy() for k, v in
               learner.outputs(learner.independent_query_logits(episode)).items()}
    confident(outputs["probabilities"])
    return outputs


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The exports, with the contract, and the answers of their learners in memory:
    episode: ProtoNet after two training steps (BatchNorm statistics not the defaults);
    adapted: MAML adapted to the support set, answering the queries alone."""
    keras.utils.set_random_seed(0)
    base = tmp_path_factory.mktemp("saved_models")
    protonet = build_learner("protonet", (28, 28, 1), ways=WAYS)
    protonet.compile(optimizer=protonet.meta_optimizer(1e-3, 10, 10, 1.0))
    source = data.synthetic(20, 10, (28, 28, 1))
    protonet.fit(data.make_episode_dataset(source, WAYS, 1, 2, 2, seed=0), steps_per_epoch=2,
                 epochs=1, verbose=0)
    maml = build_learner("maml", (28, 28, 1), ways=WAYS, test_inner_steps=1)
    support_x, support_y = tf.constant(model_pixels(SUPPORT)), tf.constant(LABELS, tf.int32)
    query_x = tf.constant(model_pixels(QUERY))
    logits = maml.independent_score(maml.adapt(support_x, support_y, training=False),
                                    Episode(support_x, support_y, query_x, None))
    adapted_classes = np.argmax(logits, axis=-1)
    return types.SimpleNamespace(
        episode=export.export_learner(protonet, str(base / "protonet"), (28, 28, 1),
                                      image_contract=CONTRACT),
        adapted=export.export_adapted(maml, support_x, support_y, str(base / "maml"),
                                      image_contract=CONTRACT, class_names=NAMES),
        episode_answer=episode_in_memory(protonet, SUPPORT, LABELS, QUERY),
        one_shot_answer=episode_in_memory(protonet, *ONE_SHOT),
        adapted_answer={"probabilities": confident(maml.probabilities(logits).numpy()),
                        "classes": adapted_classes,
                        "class_names": [NAMES[c] for c in adapted_classes]})


def episode_inputs(signature, support=SUPPORT, labels=LABELS, query=QUERY):
    """The signature's inputs as numpy arrays: source pixels (serving_default, named),
    PNG bytes (encoded, encoded_named) or model pixels (preprocessed)."""
    convert = (png if signature.startswith("encoded") else
               model_pixels if signature == "preprocessed" else np.asarray)
    inputs = {"support_images": convert(support), "support_labels": np.array(labels, np.int32),
              "query_images": convert(query)}
    if signature.endswith("named"):
        inputs["support_class_names"] = NAMES
    return inputs


def columnar(signature, inputs):
    """A REST body in the columnar ("inputs") form: pixels as JSON numbers (the source's
    uint8 values are integers, which a float32 input takes), bytes as {"b64": ...}."""
    def plain(value):
        if isinstance(value, list) and isinstance(value[0], bytes):
            return b64(value)
        return np.asarray(value).tolist()

    return {"signature_name": signature, "inputs": {k: plain(v) for k, v in inputs.items()}}


def rest_requests():
    """name -> (export, REST body)."""
    requests = {signature: ("episode", columnar(signature, episode_inputs(signature)))
                for signature in EPISODE_SIGNATURES}
    support, labels, query = ONE_SHOT
    requests["rows, S == Q"] = ("episode", {"instances": [  # one support image, one query
        {"support_images": support[i].tolist(), "support_labels": labels[i],
         "query_images": query[i].tolist()} for i in range(5)]})
    requests["rows, S != Q"] = ("episode", {"instances": [  # 10 support images, 4 queries
        {"support_images": SUPPORT[i].tolist(), "support_labels": LABELS[i],
         **({"query_images": QUERY[i].tolist()} if i < len(QUERY) else {})}
        for i in range(len(SUPPORT))]})
    body = columnar("serving_default", episode_inputs("serving_default"))
    requests["b64 to a float input"] = ("episode", {"inputs": dict(
        body["inputs"], support_images=b64(png(SUPPORT)))})
    requests["a float label"] = ("episode", {"inputs": dict(
        body["inputs"], support_labels=[float(y) for y in LABELS])})
    requests["adapted rows"] = ("adapted", {"instances": QUERY.tolist()})
    requests["adapted b64 rows"] = ("adapted", {"signature_name": "encoded",
                                                "instances": b64(png(QUERY))})
    requests["adapted bare columnar"] = ("adapted", {"signature_name": "preprocessed",
                                                     "inputs": model_pixels(QUERY).tolist()})
    return requests


def grpc_request(signature, inputs):
    """A gRPC PredictRequest: each input a TensorProto of its numpy array, as clients build
    them (tf.make_tensor_proto), serialized as it travels."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "model"
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request.SerializeToString()


def float32_pixels(inputs):
    """Pixel arrays as float32, the dtype of the image inputs (gRPC sends arrays as they are)."""
    return {k: v.astype(np.float32) if k.endswith("images") and not isinstance(v, list) else v
            for k, v in inputs.items()}


def grpc_requests():
    """name -> (export, serialized PredictRequest)."""
    requests = {signature: ("episode", grpc_request(signature, float32_pixels(
        episode_inputs(signature)))) for signature in EPISODE_SIGNATURES}
    requests["adapted"] = ("adapted", grpc_request("serving_default",
                                                   {"images": QUERY.astype(np.float32)}))
    requests["adapted encoded"] = ("adapted", grpc_request(
        "encoded", {"images": np.array(png(QUERY), dtype=object)}))
    requests["uint8 pixels"] = ("episode", grpc_request(
        "serving_default", episode_inputs("serving_default")))  # SUPPORT, QUERY are uint8
    return requests


@pytest.fixture(scope="module")
def outside(exported, tmp_path_factory):
    """Every request above answered outside this process, all at once: REST and gRPC by
    one serve_like_tf_serving.py server (one TensorFlow start-up), beside saved_model_cli
    show and run of the episode export."""
    folder = tmp_path_factory.mktemp("requests")
    lines, keys = [], []
    for kind, requests, suffix in (("rest", rest_requests(), "json"),
                                   ("grpc", grpc_requests(), "pb")):
        for i, (key, (model, request)) in enumerate(requests.items()):
            path = folder / f"{kind}{i}.{suffix}"
            if suffix == "json":
                path.write_text(json.dumps(request))
            else:
                path.write_bytes(request)
            lines.append(json.dumps([getattr(exported, model), str(path)]))
            keys.append((kind, key))
    inputs = float32_pixels(episode_inputs("serving_default"))
    for name, value in inputs.items():
        np.save(folder / f"{name}.npy", value)
    cli = {
        "show": [CLI, "show", "--dir", exported.episode, "--all"],
        "run": [CLI, "run", "--dir", exported.episode, "--tag_set", "serve",
                "--signature_def", "serving_default", "--inputs",
                ";".join(f"{name}={folder / name}.npy" for name in inputs),
                "--outdir", str(folder / "cli"), "--overwrite"]}
    cli = {k: subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ, PYTHONPATH=""))
           for k, command in cli.items()}
    try:
        served = subprocess.run([sys.executable, str(HELPER), "-"],
                                input="\n".join(lines) + "\n", capture_output=True, text=True,
                                timeout=300, cwd=folder, env=dict(os.environ, PYTHONPATH=""))
        shown = {k: process.communicate(timeout=300) for k, process in cli.items()}
    finally:
        for process in cli.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    assert served.returncode == 0, served.stderr[-3000:]
    answers = [json.loads(line) for line in served.stdout.splitlines()]
    assert len(answers) == len(keys), served.stderr[-3000:]
    found = types.SimpleNamespace(rest={}, grpc={})
    for (kind, key), answer in zip(keys, answers):
        if kind == "grpc" and "response" in answer:
            response = predict_pb2.PredictResponse()
            with open(answer["response"], "rb") as f:
                response.ParseFromString(f.read())
            answer = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
        getattr(found, kind)[key] = answer
    for k, process in cli.items():
        assert process.returncode == 0, shown[k][1][-3000:]
        setattr(found, f"cli_{k}", shown[k][0])
    found.cli_classes = np.load(folder / "cli" / "classes.npy")
    found.cli_probabilities = np.load(folder / "cli" / "probabilities.npy")
    return found


def assert_answers(answer, expected):
    """Same classes (and class names), probabilities within float32 rounding."""
    assert "error" not in answer, answer
    np.testing.assert_allclose(np.asarray(answer["probabilities"], np.float32),
                               expected["probabilities"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(answer["classes"], expected["classes"])
    if "class_names" in answer:
        names = [n.decode() if isinstance(n, bytes) else n for n in answer["class_names"]]
        assert names == [NAMES[c] for c in expected["classes"]]


def test_every_rest_signature_answers_the_learner_s_answer(exported, outside):
    """Source pixels as JSON integers, PNG bytes as {"b64": ...}, or the model's own pixels:
    one episode, one answer, in the columnar form ({"outputs": {...}})."""
    answers = [outside.rest[signature]["outputs"] for signature in EPISODE_SIGNATURES]
    for signature, answer in zip(EPISODE_SIGNATURES, answers):
        assert set(answer) == {"logits", "probabilities", "classes"} | (
            {"class_names"} if signature.endswith("named") else set()), signature
        assert_answers(answer, exported.episode_answer)
    for answer in answers[1:]:  # the same model pixels reach the same graph: equal floats
        assert answer["probabilities"] == answers[0]["probabilities"]


def test_the_row_form_needs_every_input_to_share_the_0th_dimension(exported, outside):
    """"instances" stacks one {name: value} object per row: an episode fits only when it has
    as many support images as queries; otherwise a row lacks an input, and TF Serving says so."""
    rows = outside.rest["rows, S == Q"]["predictions"]
    assert [set(row) for row in rows] == [{"logits", "probabilities", "classes"}] * 5
    assert_answers({k: [row[k] for row in rows] for k in ("probabilities", "classes")},
                   exported.one_shot_answer)
    error = outside.rest["rows, S != Q"]["error"]
    assert error.startswith("Failed to process element: 4 of 'instances' list. JSON object: {")
    assert error.endswith(" keys must be equal to: query_images,support_images,support_labels")


def test_json_values_must_fit_the_input_s_dtype(outside):
    """Integers are taken for float32 pixels (above); {"b64": ...} only for string inputs,
    and only integers for int32 labels."""
    error = outside.rest["b64 to a float input"]["error"]  # the value printed up to 256 bytes
    assert re.fullmatch(r'JSON Value: \{\n    "b64": "iVBORw0KGgo[A-Za-z0-9+/=]+" Type: Object is '
                        r"not of expected type: float", error), error
    assert outside.rest["a float label"] == {
        "error": "JSON Value: 0.0 Type: Number is not of expected type: int32"}


def test_the_adapted_export_takes_rows_of_images_or_of_b64_bytes(exported, outside):
    """One input, so "instances" may list images (or {"b64": ...}) and "inputs" may be the
    images themselves."""
    for key in ("adapted rows", "adapted b64 rows"):
        rows = outside.rest[key]["predictions"]
        assert [set(row) for row in rows] == [{"probabilities", "classes", "class_names"}] * 4
        assert_answers({k: [row[k] for row in rows] for k in rows[0]}, exported.adapted_answer)
    assert_answers(outside.rest["adapted bare columnar"]["outputs"], exported.adapted_answer)


def test_grpc_requests_answer_as_rest(exported, outside):
    """A PredictRequest of float32 pixels, int32 labels and string bytes or names, each input
    read back with tf.make_ndarray as TF Serving reads a TensorProto."""
    for signature in EPISODE_SIGNATURES:
        answer = outside.grpc[signature]
        assert_answers(answer, exported.episode_answer)
        rest = outside.rest[signature]["outputs"]["probabilities"]  # float32 written exactly
        np.testing.assert_array_equal(answer["probabilities"], np.asarray(rest, np.float32))
    for key in ("adapted", "adapted encoded"):
        assert_answers(outside.grpc[key], exported.adapted_answer)


def test_grpc_refuses_uint8_pixels_for_the_float32_input(outside):
    """TF Serving feeds a gRPC tensor as sent: no conversion to the signature's dtype, and
    the session refuses the mismatch. (REST converts JSON numbers itself, so REST clients
    may send integers; gRPC clients must send float32.)"""
    answer = outside.grpc["uint8 pixels"]
    assert answer["code"] == "INVALID_ARGUMENT"
    assert re.fullmatch(r"Expects arg\[\d\] to be float but uint8 is provided", answer["error"])


def test_saved_model_cli_shows_every_signature(outside):
    shown = outside.cli_show
    for signature in EPISODE_SIGNATURES:
        assert f"signature_def['{signature}']:" in shown
    encoded = shown.split("signature_def['encoded']:")[1].split("signature_def[")[0]
    assert "dtype: DT_STRING" in encoded and "shape: (-1)" in encoded
    named = shown.split("signature_def['named']:")[1].split("signature_def[")[0]
    assert "['support_class_names']" in named and "['class_names']" in named


def test_saved_model_cli_run_answers_the_learner_s_classes(exported, outside):
    assert_answers({"probabilities": outside.cli_probabilities,
                    "classes": outside.cli_classes}, exported.episode_answer)
