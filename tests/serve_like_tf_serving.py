"""Answers a TF Serving REST predict body from a SavedModel, without tf_meta.

Usage: python serve_like_tf_serving.py SAVED_MODEL_DIR REQUEST_JSON  -> {"outputs": {...}}

Run as a separate process: tf_meta is made unimportable first, so the export must stand on
its own, as it does inside TF Serving. Inputs are converted to the signature's dtypes the way
TF Serving's REST API converts JSON numbers.
"""

import json
import sys

sys.modules["tf_meta"] = None  # any `import tf_meta` now raises ImportError

import tensorflow as tf  # noqa: E402


def main(model_dir, request_path):
    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    with open(request_path) as f:
        body = json.load(f)
    inputs = {name: tf.constant(value, dtype=specs[name].dtype)
              for name, value in body["inputs"].items()}
    outputs = signature(**inputs)
    json.dump({"outputs": {k: v.numpy().tolist() for k, v in outputs.items()}}, sys.stdout)


if __name__ == "__main__":
    main(*sys.argv[1:])
