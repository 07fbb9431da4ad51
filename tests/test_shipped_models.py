"""The exports shipped in saved_models/, ready to serve right after `git clone`.

saved_models/shipped.json lists each with what it was trained and exported from and the
answers recorded when it was shipped. Every request here is answered by a process that
cannot import tf_meta (tests/serve_like_tf_serving.py), as TF Serving would answer it.

Usage: python tests/test_shipped_models.py record NAME   (after exporting NAME: writes the
recorded answers into saved_models/shipped.json; needs the prepared TFDS omniglot)
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import ROOT  # noqa: E402
from example_requests import CHARACTERS, FILES, QUERY_ORDER, bodies  # noqa: E402

SHIPPED_FILE = ROOT / "saved_models" / "shipped.json"
SHIPPED = json.loads(SHIPPED_FILE.read_text())
MAX_BYTES = 5 * 2 ** 20
# Fixed episodes each shipped model is scored on: 5-way 1-shot, 3 queries per class.
FIXED = dict(ways=5, shots=1, query_shots=3, meta_batch_size=1, seed=2024, num_episodes=20)


def version_folder(name):
    return ROOT / "saved_models" / name / str(SHIPPED[name]["version"])


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


def serve(model, requests, tmp_path):
    """The answers of a process without tf_meta to REST bodies `requests`, in order."""
    paths = []
    for i, body in enumerate(requests):
        paths.append(tmp_path / f"request{i}.json")
        paths[-1].write_text(json.dumps(body))
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "serve_like_tf_serving.py"),
                           str(model), *map(str, paths)], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONPATH=""))
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def fixed_episode_requests(test_source):
    """REST bodies (preprocessed signature) of the FIXED episodes, and their query labels."""
    from tf_meta import data, export
    settings = dict(FIXED)
    episodes = data.make_episode_dataset(test_source, settings.pop("ways"),
                                         settings.pop("shots"), settings.pop("query_shots"),
                                         **settings, split="test")
    requests, labels = [], []
    for episode in episodes:
        body = export.request_body(episode.support_x[0], episode.support_y[0],
                                   episode.query_x[0])
        requests.append({"signature_name": "preprocessed", **body})
        labels.append(episode.query_y[0].numpy().tolist())
    return requests, labels


def readme_requests():
    return [json.loads((ROOT / FILES[kind]).read_text())
            for kind in ("pixels", "b64", "preprocessed")]


def test_every_shipped_export_is_listed_small_and_described():
    assert {"protonet", "maml"} <= set(SHIPPED)
    for name, shipped in SHIPPED.items():
        folder = version_folder(name)
        assert folder_bytes(folder) <= MAX_BYTES, name
        meta = json.loads((folder / "assets.extra" / "tf_meta.json").read_text())
        assert meta["serving_contract"] == 2 and meta["image_contract"]["invert"]
        assert re.fullmatch("[0-9a-f]{40}", meta["commit"]), "exported from a clean checkout"
        assert meta["test"]["accuracy"] == shipped["test"]["accuracy"]
        assert {"command", "trained_at"} <= set(shipped)


@pytest.fixture(scope="module")
def answers(omniglot_splits, tmp_path_factory):
    """name -> (its answers to the README requests, to the FIXED episodes' requests), from
    one process without tf_meta (a TensorFlow start-up costs seconds)."""
    requests, labels = fixed_episode_requests(omniglot_splits["test"])
    bodies = readme_requests() + requests
    folder = tmp_path_factory.mktemp("requests")
    paths = []
    for i, body in enumerate(bodies):
        paths.append(folder / f"{i}.json")
        paths[-1].write_text(json.dumps(body))
    program = ("import sys; sys.path.insert(0, sys.argv[1]); import serve_like_tf_serving as s\n"
               "bodies = [s.read(path) for path in sys.argv[3:]]\n"
               "for model in sys.argv[2].split(','): s.answer(model, bodies)")
    names = sorted(SHIPPED)
    done = subprocess.run([sys.executable, "-c", program, str(ROOT / "tests"),
                           ",".join(str(version_folder(n)) for n in names), *map(str, paths)],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=""))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == len(names) * len(bodies)
    per_model = [lines[i * len(bodies):(i + 1) * len(bodies)] for i in range(len(names))]
    return {n: (mine[:3], mine[3:], labels) for n, mine in zip(names, per_model)}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_readme_requests_get_the_recorded_answers(name, answers):
    """Raw pixels, PNG bytes and the training source's pixels of the same ten images get
    the same answers: the preprocessing in the graph is the training pipeline's."""
    pixels, b64, preprocessed = (answer["outputs"] for answer in answers[name][0])
    np.testing.assert_allclose(pixels["logits"], preprocessed["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b64["logits"], preprocessed["logits"], rtol=1e-5, atol=1e-5)
    assert pixels["classes"] == b64["classes"] == SHIPPED[name]["readme_classes"]
    assert SHIPPED[name]["readme_classes"] == list(QUERY_ORDER)  # each query right
    names = json.loads((ROOT / FILES["b64"]).read_text())["inputs"]["support_class_names"]
    assert b64["class_names"] == [names[c] for c in b64["classes"]]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_fixed_episodes_score_the_recorded_accuracy(name, answers):
    _, fixed, labels = answers[name]
    correct = [np.equal(a["outputs"]["classes"], y) for a, y in zip(fixed, labels)]
    assert float(np.mean(correct)) == SHIPPED[name]["fixed_episodes_accuracy"]


def test_the_readme_requests_are_the_tfds_images(omniglot_splits):
    """docs/example_request*.json are exactly tests/example_requests.py's bodies: TFDS's own
    images of CHARACTERS, and the training source's pixels of the same images."""
    for kind, body in bodies(omniglot_splits["test"]).items():
        assert json.loads((ROOT / FILES[kind]).read_text()) == body, kind
    assert len(CHARACTERS) == len(QUERY_ORDER) == 5


def record(name):
    """Writes the answers `name`'s export gives now into saved_models/shipped.json."""
    import tempfile
    import pathlib

    from tf_meta import data
    test_source = data.omniglot("vinyals", download=False)["test"]
    requests, labels = fixed_episode_requests(test_source)
    with tempfile.TemporaryDirectory() as tmp:
        answers = serve(version_folder(name), readme_requests() + requests, pathlib.Path(tmp))
    correct = [np.equal(a["outputs"]["classes"], y) for a, y in zip(answers[3:], labels)]
    SHIPPED[name].update(readme_classes=answers[0]["outputs"]["classes"],
                         fixed_episodes_accuracy=float(np.mean(correct)))
    SHIPPED_FILE.write_text(json.dumps(SHIPPED, indent=2) + "\n")
    print(name, SHIPPED[name])


if __name__ == "__main__":
    record(sys.argv[2])
