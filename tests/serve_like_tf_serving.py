"""Answers TF Serving REST predict bodies from a SavedModel, without tf_meta.

Usage: python serve_like_tf_serving.py SAVED_MODEL_DIR REQUEST_JSON [REQUEST_JSON ...]
  -> one line per request: {"outputs": {...}}, or {"error": "..."} as TF Serving answers a
  request the model refuses (HTTP 400).
  python serve_like_tf_serving.py -   (a server, as TF Serving stays up: each stdin line
  ["SAVED_MODEL_DIR", "REQUEST_JSON"] is answered by one stdout line, as above; one
  TensorFlow start-up for many requests)

Run as a separate process: tf_meta is made unimportable first, so the export must stand on
its own, as it does inside TF Serving. Inputs are converted to the signature's dtypes the way
TF Serving's REST API converts JSON numbers.
"""

import json
import sys

sys.modules["tf_meta"] = None  # any `import tf_meta` now raises ImportError

import tensorflow as tf  # noqa: E402


def main(model_dir, *request_paths):
    answer(model_dir, [read(path) for path in request_paths])


def read(request_path):
    with open(request_path) as f:
        return json.load(f)


def answer(model_dir, bodies):
    """Prints the answer of the export `model_dir` to each parsed REST body, one a line."""
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    for body in bodies:
        inputs = {name: tf.constant(value, dtype=specs[name].dtype)
                  for name, value in body["inputs"].items()}
        try:
            outputs = signature(**inputs)
        except tf.errors.InvalidArgumentError as e:  # TF Serving: 400 with the op's message
            print(json.dumps({"error": e.message}))
            continue
        print(json.dumps({"outputs": {k: plain(v) for k, v in outputs.items()}}))


def plain(tensor):
    """A tensor as TF Serving's REST API writes it: nested lists, strings as text."""
    if tensor.dtype == tf.string:
        return tf.strings.unicode_transcode(tensor, "UTF-8", "UTF-8").numpy().astype(str).tolist()
    return tensor.numpy().tolist()


def serve_forever():
    for line in sys.stdin:
        main(*json.loads(line))
        sys.stdout.flush()


if __name__ == "__main__":
    serve_forever() if sys.argv[1:] == ["-"] else main(*sys.argv[1:])
