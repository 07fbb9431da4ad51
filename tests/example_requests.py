"""The README's example requests: five Omniglot test characters as TFDS provides them.

Usage: python tests/example_requests.py   (writes docs/example_request*.json; needs the
prepared TFDS omniglot, TFDS_DATA_DIR). tests/test_shipped_models.py rebuilds them and
checks the files are exactly these.

Each character's first TFDS image is its support image, its second a query; the queries
come in QUERY_ORDER, so the right answer is classes == QUERY_ORDER.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tf_meta import export  # noqa: E402

# TFDS labels of five characters of the vinyals test split, from five alphabets.
CHARACTERS = (1200, 1260, 1320, 1380, 1440)
QUERY_ORDER = (2, 0, 4, 1, 3)
FILES = {"pixels": "docs/example_request.json", "b64": "docs/example_request_b64.json",
         "preprocessed": "docs/example_request_preprocessed.json"}


def raw_examples(data_dir=None):
    """(support PNGs, query PNGs, class names): the characters' TFDS image bytes as stored.

    The first two images of each character in TFDS's order, the order in which
    data.omniglot numbers a class's examples.
    """
    import tensorflow_datasets as tfds

    dataset, info = tfds.load("omniglot", split="train+test", data_dir=data_dir,
                              download=False, with_info=True,
                              decoders={"image": tfds.decode.SkipDecoding()})
    found = {c: [] for c in CHARACTERS}
    for example in dataset:
        label = int(example["label"])
        if label in found and len(found[label]) < 2:
            found[label].append(example["image"].numpy())
    names = [info.features["label"].names[c] for c in CHARACTERS]
    return ([found[c][0] for c in CHARACTERS], [found[CHARACTERS[i]][1] for i in QUERY_ORDER],
            names)


def model_pixels(test_source, names):
    """(support, query) [5, 28, 28, 1] pixels of the same images from the training source
    (data.omniglot's test split), the characters given by their TFDS `names`."""
    index = {name: i for i, name in enumerate(test_source.names)}
    rows = [index[f"{name}/rot000"] for name in names]
    support = test_source.examples[rows, 0]
    query = test_source.examples[[rows[i] for i in QUERY_ORDER], 1]
    return support, query


def bodies(test_source, data_dir=None):
    """{kind: REST body} for FILES: raw pixels (one of TFDS's three equal channels, to keep
    the file small), the PNG bytes with class names, and the training source's pixels."""
    support, query, names = raw_examples(data_dir)
    labels = list(range(len(CHARACTERS)))
    pixels = export.request_body(one_channel(support), labels, one_channel(query))
    b64 = export.request_body(support, labels, query, support_class_names=names)
    b64["signature_name"] = "encoded_named"
    support_pixels, query_pixels = model_pixels(test_source, names)
    preprocessed = export.request_body(support_pixels, labels, query_pixels)
    preprocessed["signature_name"] = "preprocessed"
    return {"pixels": pixels, "b64": b64, "preprocessed": preprocessed}


def one_channel(pngs):
    """[n, 105, 105, 1] uint8: the first of the three equal channels of each PNG."""
    return np.stack([tf.io.decode_png(png).numpy()[..., :1] for png in pngs])


def main():
    from tf_meta import data
    test_source = data.omniglot("vinyals", download=False)["test"]
    for kind, body in bodies(test_source).items():
        with open(os.path.join(ROOT, FILES[kind]), "w") as f:
            json.dump(body, f, separators=(",", ":"))
        print("wrote", FILES[kind])


if __name__ == "__main__":
    main()
