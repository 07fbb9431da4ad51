"""`tf-meta predict`: image files in, the export's answer out, through the SavedModel alone.

The specification: for every algorithm the command answers what the in-memory learner
answers on the same files (decoded and preprocessed by `images.to_model_pixels`), with
the support classes named by their sorted folder names; bad input ends with one line on
stderr and exit status 2; tf_meta.predict runs without tf_meta's learner code.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT
from tf_meta import ALGORITHMS, build_learner, cli, data, export, predict
from tf_meta.data import images
from tf_meta.episode import Episode

GRAY = data.ImageContract(28, 28, 1, invert=True, source="test drawings, dark on light")
RGB = data.ImageContract(28, 28, 3, source="test photos")
# Short inner loops and a small memory: the command, not the learners, is under test.
TINY = {"maml": dict(test_inner_steps=2), "fomaml": dict(test_inner_steps=1),
        "reptile": dict(test_inner_steps=2),
        "mann": dict(controller_units=16, memory_slots=8, memory_width=8, read_heads=1)}
# Reptile's Adam inner steps amplify float32 differences between graph and eager kernels.
ATOL = {"reptile": 1e-3}
CLASSES = ["b10", "b9", "a"]  # sorted: a, b10, b9 (string order, not natural order)
NO_LABELS = tf.zeros([0], tf.int32)  # an Episode's query labels, unread by the test
NATIVE_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")


def drawing(rng, size, channels=1, dark=False):
    """uint8 [size[0], size[1], channels]: dark strokes on white (or a dark background)."""
    image = np.full((*size, channels), 30 if dark else 255, np.uint8)
    rows = rng.integers(0, size[0], 3 * size[0])
    cols = rng.integers(0, size[1], 3 * size[0])
    image[rows, cols] = 255 - image[rows, cols]
    return image


def write_image(path, pixels, kind="png"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encode = tf.io.encode_png if kind == "png" else tf.io.encode_jpeg
    tf.io.write_file(str(path), encode(tf.constant(pixels)))
    return str(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """support/<class>/ 2 drawings each (sizes vary), query/ one loose drawing and
    query/<class>/ 2 drawings each: 7 queries, 6 with a true class."""
    root = tmp_path_factory.mktemp("drawings")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        for i in range(2):
            write_image(root / "support" / name / f"{i}.png", drawing(rng, (20 + 5 * c, 28)))
            write_image(root / "query" / name / f"{i}.png", drawing(rng, (28, 30 - i)))
    write_image(root / "query" / "loose.png", drawing(rng, (40, 40)))
    return root


def support_files(folder):
    names = sorted(os.listdir(folder))
    files = [(os.path.join(folder, n, f), label) for label, n in enumerate(names)
             for f in sorted(os.listdir(os.path.join(folder, n)))]
    return names, [f for f, _ in files], [label for _, label in files]


def model_pixels(files, contract):
    """[n, *contract.input_shape]: each file decoded and preprocessed as training does."""
    return tf.concat([images.to_model_pixels(
        tf.cast(images.decode(tf.io.read_file(f)), tf.float32)[None], contract)
        for f in files], axis=0)


def learner_of(algo, input_shape=(28, 28, 1)):
    keras.utils.set_random_seed(0)
    return build_learner(algo, input_shape, ways=5, **TINY.get(algo, {}))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """algo -> (untrained learner, its export with the GRAY contract), made on first use."""
    made = {}

    def export_of(algo):
        if algo not in made:
            learner = learner_of(algo)
            base = tmp_path_factory.mktemp("saved_models") / algo
            made[algo] = learner, export.export_learner(
                learner, str(base), (28, 28, 1), image_contract=GRAY, metadata={"algo": algo})
        return made[algo]

    return export_of


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `tf-meta predict argv` in this process."""
    status = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def answered(capsys, tmp_path, *argv):
    """The --json answer of a successful `tf-meta predict argv`, and its stdout."""
    status, out, err = run(capsys, *argv, "--json", tmp_path / "answer.json")
    assert (status, err) == (0, "")
    return json.loads((tmp_path / "answer.json").read_text()), out


def assert_same_answer(answer, probabilities, classes, atol):
    """The command's answer is `probabilities` [Q, ways] (the in-memory learner's), with
    the most probable class named (where the learner's margin exceeds the tolerance)."""
    served = np.array([q["probabilities"] for q in answer["queries"]])
    np.testing.assert_allclose(served, probabilities, atol=atol, rtol=0)
    assert answer["classes"] == classes
    for q, p in zip(answer["queries"], probabilities):
        assert q["class"] == classes[int(np.argmax(q["probabilities"]))]
        assert q["probability"] == max(q["probabilities"])
        top2 = np.sort(p)[-2:]
        if top2[1] - top2[0] > 2 * atol:
            assert q["class"] == classes[int(np.argmax(p))]


def in_memory(learner, folders):
    """(classes, query files, probabilities [Q, ways]) of the learner on the drawings: the
    queries of query/ in the command's order (loose, then by class folder)."""
    classes, files, labels = support_files(folders / "support")
    queries = [str(folders / "query" / "loose.png")] + [
        str(folders / "query" / c / f"{i}.png") for c in sorted(CLASSES) for i in range(2)]
    episode = Episode(model_pixels(files, GRAY), tf.constant(labels, tf.int32),
                      model_pixels(queries, GRAY), NO_LABELS)
    logits = learner.independent_query_logits(episode)
    return classes, queries, learner.probabilities(logits).numpy()


@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_every_algorithm_answers_as_the_learner_in_memory(algo, exports, folders, capsys,
                                                         tmp_path):
    learner, path = exports(algo)
    answer, out = answered(capsys, tmp_path, "--model", path, "--support",
                           folders / "support", "--query", folders / "query")
    classes, queries, expected = in_memory(learner, folders)
    assert classes == ["a", "b10", "b9"]
    assert [q["query"] for q in answer["queries"]] == queries
    assert [q["true_class"] for q in answer["queries"]] == [None, "a", "a", "b10", "b10",
                                                             "b9", "b9"]
    assert_same_answer(answer, expected, classes, ATOL.get(algo, 1e-5))
    assert (answer["model"], answer["algo"], answer["signature"]) == (path, algo,
                                                                      "encoded_named")
    correct = sum(q["class"] == q["true_class"] for q in answer["queries"][1:])
    assert answer["accuracy"] == {"correct": correct, "total": 6, "accuracy": correct / 6}
    lines = out.splitlines()
    assert lines[0] == f"model {path} ({algo}): 3 classes, 6 support images, 7 queries"
    assert lines[1].split() == ["query", "true", "class", "probability", "next"]
    first = answer["queries"][0]
    assert lines[2].split()[:2] == [queries[0], first["class"]]
    assert lines[2].split()[2] == f"{first['probability']:.4f}"
    assert lines[-1] == f"accuracy: {correct}/6 = {100 * correct / 6:.1f}% (queries in class " \
        "sub-folders)"


def test_csv_has_every_class_probability_and_stdout_the_top_k(exports, folders, capsys,
                                                              tmp_path):
    _, path = exports("protonet")
    query = folders / "query" / "b9" / "0.png"
    status, out, _ = run(capsys, "--model", path, "--support", folders / "support", "--query",
                         query, "--csv", tmp_path / "out.csv", "--top_k", 2)
    assert status == 0 and not list(tmp_path.glob("*.tmp-*"))  # renamed into place
    header, row = (tmp_path / "out.csv").read_text().splitlines()
    assert header == "query,true_class,class,probability,p(a),p(b10),p(b9)"
    cells = row.split(",")
    probabilities = [float(p) for p in cells[4:]]
    assert cells[:3] == [str(query), "", ["a", "b10", "b9"][int(np.argmax(probabilities))]]
    assert float(cells[3]) == max(probabilities) and abs(sum(probabilities) - 1) < 1e-5
    second = sorted(zip(probabilities, ["a", "b10", "b9"]))[-2]
    # no "true" column (no query has a true class); "next" holds top_k - 1 = 1 class
    assert out.splitlines()[2].split() == [str(query), cells[2], f"{float(cells[3]):.4f}",
                                           second[1], f"{second[0]:.4f}"]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """(learner, support_x, support_y, its export's base path, query files): an RGB MAML
    adapted to cat/ and dog/ images of several sizes, channels (gray, RGB, RGBA) and
    formats, its classes named "cat" and "dog"; the query files are as varied."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    files = [write_image(root / "cat" / "0.png", drawing(rng, (30, 20), 3)),
             write_image(root / "cat" / "1.jpg", drawing(rng, (50, 50), 3), "jpeg"),
             write_image(root / "dog" / "0.png", drawing(rng, (28, 28), 1)),
             write_image(root / "dog" / "1.PNG", drawing(rng, (17, 31), 4))]
    queries = [write_image(root / "query" / "a.png", drawing(rng, (64, 40), 4)),
               write_image(root / "query" / "b.jpeg", drawing(rng, (12, 12), 3), "jpeg"),
               write_image(root / "query" / "dog" / "c.png", drawing(rng, (33, 29), 1))]
    learner = learner_of("maml", (28, 28, 3))
    support_x, support_y = model_pixels(files, RGB), tf.constant([0, 0, 1, 1])
    export.export_adapted(learner, support_x, support_y, str(root / "maml"),
                          image_contract=RGB, class_names=["cat", "dog"],
                          metadata={"algo": "maml"})
    return learner, support_x, support_y, root / "maml", queries


def test_an_adapted_rgb_export_answers_its_class_names_for_images_of_any_size(
        adapted, capsys, tmp_path):
    learner, support_x, support_y, base, queries = adapted
    answer, out = answered(capsys, tmp_path, "--model", base, "--query",
                           os.path.dirname(queries[0]))
    fast = learner.adapt(support_x, support_y, training=False)
    logits = learner.independent_score(
        fast, Episode(support_x, support_y, model_pixels(queries, RGB), None))
    assert [q["query"] for q in answer["queries"]] == queries
    assert_same_answer(answer, learner.probabilities(logits).numpy(), ["cat", "dog"], 1e-5)
    assert answer["model"] == str(base / "1")  # the base path's highest version
    assert answer["signature"] == "encoded"
    assert [q["true_class"] for q in answer["queries"]] == [None, None, "dog"]
    assert answer["accuracy"]["total"] == 1
    assert out.splitlines()[0] == f"model {base}/1 (maml): 2 classes (adapted), 3 queries"


def edited(path, tmp_path, change):
    """A copy of export version `path` (as <tmp_path>/copy/1) whose tf_meta.json is
    `change`d (a function of the dict) or removed (change None)."""
    copy = tmp_path / "copy" / "1"
    shutil.copytree(path, copy)
    meta = copy / "assets.extra" / "tf_meta.json"
    if change is None:
        meta.unlink()
    else:
        meta.write_text(json.dumps(change(json.loads(meta.read_text()))))
    return copy


def bounds(**changes):
    def change(meta):
        return {**meta, "request_bounds": {**meta["request_bounds"], **changes}}
    return change


def test_queries_above_max_queries_go_in_several_requests_answered_alike(
        exports, folders, capsys, tmp_path, monkeypatch):
    learner, path = exports("protonet")
    sizes = []
    real_call = predict.call
    monkeypatch.setattr(predict, "call", lambda *args: sizes.append(len(args[-1]))
                        or real_call(*args))
    split, _ = answered(capsys, tmp_path, "--model",
                        edited(path, tmp_path, bounds(max_queries=3)), "--support",
                        folders / "support", "--query", folders / "query")
    assert sizes == [3, 3, 1]  # 7 queries
    assert_same_answer(split, in_memory(learner, folders)[2], ["a", "b10", "b9"], 1e-5)


def test_the_highest_ascii_digit_version_is_used(exports, folders, capsys, tmp_path):
    _, path = exports("protonet")
    for version in ("2", "10"):
        shutil.copytree(path, tmp_path / "model" / version)
    os.makedirs(tmp_path / "model" / "\u0661\u0662")  # Arabic-Indic 12: not a version
    os.makedirs(tmp_path / "model" / "11.tmp")
    answer, _ = answered(capsys, tmp_path, "--model", tmp_path / "model", "--support",
                         folders / "support", "--query", folders / "query" / "loose.png")
    assert answer["model"] == str(tmp_path / "model" / "10")


def bad_folders(root):
    """Folders and files for the bad-input cases, under `root`."""
    rng = np.random.default_rng(2)
    for name in ("a", "b"):
        write_image(root / "flat" / f"{name}.png", drawing(rng, (28, 28)))
        write_image(root / "empty_class" / name / "0.png", drawing(rng, (28, 28)))
        write_image(root / "loose" / name / "0.png", drawing(rng, (28, 28)))
        write_image(root / "corrupt" / name / "0.png", drawing(rng, (28, 28)))
    write_image(root / "loose" / "stray.png", drawing(rng, (28, 28)))
    os.makedirs(root / "empty_class" / "c")
    (root / "empty_class" / "c" / "notes.txt").write_text("no images here")
    (root / "corrupt" / "b" / "1.png").write_text("not a png")
    shutil.copytree(root / "empty_class" / "a", root / "folder_image" / "a")
    os.makedirs(root / "folder_image" / "a" / "1.png")
    os.makedirs(root / "stranger" / "x")
    write_image(root / "stranger" / "x" / "0.png", drawing(rng, (28, 28)))
    os.makedirs(root / "nothing")
    (root / "text.jpg").write_text("not a jpeg")
    write_image(root / "dark" / "ok.png", drawing(rng, (28, 28)))
    write_image(root / "dark" / "night.png", drawing(rng, (28, 28), dark=True))
    for c in range(6):
        write_image(root / "six" / f"c{c}" / "0.png", drawing(rng, (28, 28)))
    shutil.copytree(root / "six", root / "old" / "1")  # a version folder, but no export
    return root


MODEL, SUPPORT, QUERY = "model", "support", "query"  # keys of a case's changes to argv
GOOD = "good"  # the drawings' support or query folder (by default: query/loose.png)


def transductive(meta):
    return {**bounds(max_queries=2)(meta), "queries": "one batch (transductive)"}


def no_contract(meta):  # as export_learner writes it without an image contract
    return {**meta, "image_contract": None, "signatures": {
        k: v for k, v in meta["signatures"].items() if not k.startswith("encoded")}}


def old_contract(meta):  # serving contract 1: model pixels only
    return {**no_contract(meta), "serving_contract": 1}


BAD_INPUT = {  # case: (argv changes, the one line's expected part or parts)
    "missing support folder": ({SUPPORT: "nowhere"}, "support folder '{root}/nowhere' "
                               "does not exist"),
    "support without class sub-folders": ({SUPPORT: "flat"}, "support folder '{root}/flat' "
                                          "has no class sub-folders"),
    "class folder without images": ({SUPPORT: "empty_class"},
                                    "class folder '{root}/empty_class/c' has no images"),
    "images beside the class folders": ({SUPPORT: "loose"}, "has images outside its class "
                                        "sub-folders, e.g. '{root}/loose/stray.png'"),
    "not an image in a class folder": ({SUPPORT: "corrupt"}, "cannot read image "
                                       "'{root}/corrupt/b/1.png': Unknown image file format"),
    "a folder named like an image": ({SUPPORT: "folder_image"}, "cannot read image "
                                     "'{root}/folder_image/a/1.png': it is a directory, not "
                                     "a regular file"),
    "not an image as a query": ({QUERY: "text.jpg"}, "cannot read image '{root}/text.jpg': "
                                "Unknown image file format"),
    "missing query": ({QUERY: "gone.png"}, "query path '{root}/gone.png' does not exist"),
    "no query images": ({QUERY: "nothing"}, "query folder '{root}/nothing' has no images"),
    "a query class folder without images": ({QUERY: "empty_class"},
                                            "query class folder '{root}/empty_class/c' has "
                                            "no images"),
    "a query class the model lacks": ({QUERY: "stranger"}, "query class folder 'x' names "
                                      "no class of the model's (a, b10, b9)"),
    "model path missing": ({MODEL: "absent"}, "model path '{root}/absent' does not exist"),
    "model path not an export": ({MODEL: "flat"}, "model path '{root}/flat' is not an "
                                 "export: no saved_model.pb in it and no integer version "
                                 "folder"),
    "highest version not an export": ({MODEL: "old"}, "its highest version '{root}/old/1' "
                                      "holds no saved_model.pb"),
    "no tf_meta.json": ({MODEL: None}, "has no assets.extra/tf_meta.json, so it is not a "
                        "tf_meta export predict can read: re-export it with this tf_meta"),
    "no image contract": ({MODEL: no_contract}, "has no 'encoded' signature (serving "
                          "contract 2, image contract none), so it cannot take image files: "
                          "re-export it with this tf_meta"),
    "serving contract 1": ({MODEL: old_contract}, "has no 'encoded' signature (serving "
                           "contract 1, image contract none)"),
    "support above max_support": ({MODEL: bounds(max_support=5)}, "6 support images, above "
                                  "max_support=5 of this export: use fewer, or re-export with "
                                  "max_support=<more>"),
    "ways above max_ways": ({MODEL: bounds(max_ways=2)}, "3 classes, above max_ways=2 of "
                           "this export"),
    "transductive queries above max_queries": (
        {MODEL: transductive, QUERY: GOOD}, "7 query images, above max_queries=2 of this "
        "export, which answers its queries as one batch (transductive): split, the answers "
        "would change; send at most 2"),
    "no support for an episode export": ({SUPPORT: None}, "classifies queries against a "
                                         "support set: pass --support DIR"),
    "output folder missing": ({"--csv": "no/such/out.csv"}, "cannot write "
                              "'{root}/no/such/out.csv': folder '{root}/no/such' does not "
                              "exist"),
    # the graph's reason (its wording is images.decode_to_model_pixels'), with its value
    "an image the model refuses": ({QUERY: "dark"}, (
        "the model refuses image '{root}/dark/night.png': query_images: an image has a dark "
        "background (mean pixel below 128)", "(test drawings, dark on light)", "Mean pixel: "
        "50.14")),
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return bad_folders(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_status_2(case, exports, folders, bad, capsys,
                                                 tmp_path):
    changes, expected = BAD_INPUT[case]
    _, path = exports("protonet")
    argv = {MODEL: path, SUPPORT: folders / "support", QUERY: folders / "query" / "loose.png"}
    for key, value in changes.items():
        if key == MODEL and not isinstance(value, str):  # None or a tf_meta.json change
            argv[MODEL] = edited(path, tmp_path, value)
        elif value is None:
            del argv[key]
        elif value == GOOD:
            argv[key] = folders / key
        else:
            argv[key] = bad / value
    status, out, err = run(capsys, *[x for key, value in argv.items() for x in (
        key if key.startswith("--") else f"--{key}", value)])
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("tf-meta predict: error: ")
    for part in (expected,) if isinstance(expected, str) else expected:
        assert part.format(root=bad) in err


def test_an_adapted_export_takes_no_support_and_a_head_bounds_the_ways(
        adapted, exports, folders, bad, capsys):
    status, _, err = run(capsys, "--model", adapted[3], "--support", folders / "support",
                         "--query", adapted[4][0])
    assert status == 2 and "is adapted to its own support set (classes: cat, dog): it " \
        "takes no --support; leave it out" in err
    _, maml = exports("maml")  # its head has 5 outputs: max_ways 5 in its tf_meta.json
    status, _, err = run(capsys, "--model", maml, "--support", bad / "six", "--query",
                         folders / "query" / "loose.png")
    assert status == 2 and err.count("\n") == 1 and "6 classes, above max_ways=5" in err


def test_a_malformed_command_line_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_:
        predict.main(["--model", "m", "--query", "q.png", "--top_k", "0"])
    assert exit_.value.code == 2
    assert "argument --top_k/--top-k: must be at least 1, got 0" in capsys.readouterr().err


ALLOWED_TF_META = {"tf_meta.files", "tf_meta.data.image_files"}


def test_predict_imports_only_tensorflow_numpy_the_stdlib_and_image_files():
    tree = ast.parse((ROOT / "tf_meta" / "predict.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    ours = {name for name in imported if name.startswith("tf_meta")}
    others = {name.split(".")[0] for name in imported - ours}
    assert ours == ALLOWED_TF_META
    assert others - set(sys.stdlib_module_names) == {"numpy", "tensorflow"}


ISOLATED = """
import sys, types
root = sys.argv[1]
for name, path in (("tf_meta", root), ("tf_meta.data", root + "/data")):
    package = types.ModuleType(name)  # the packages without their __init__'s imports
    package.__path__ = [path]
    sys.modules[name] = package
for name in ("tf_meta.algorithms", "tf_meta.training", "tf_meta.export", "tf_meta.episode",
             "tf_meta.data.sources", "keras"):
    sys.modules[name] = None  # importing any of them raises ImportError
from tf_meta import predict
statuses = [predict.main(sys.argv[2:]), predict.main(sys.argv[2:6] + ["--query", "."])]
print(statuses, sorted(m for m in sys.modules if m.startswith("tf_meta") and sys.modules[m]))
"""


def console(*argv):
    """A process running `argv` with the tf-meta console script (in the venv's bin)."""
    script = os.path.join(os.path.dirname(sys.executable), "tf-meta")
    return subprocess.Popen([script, *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_the_console_script_and_a_process_without_learner_code(exports, folders, tmp_path):
    """Two processes at once: the console script's prediction, and tf_meta.predict with
    tf_meta's learners, training, export and Keras unimportable, answering alike (and
    refusing a bad input: one line besides TensorFlow's native log)."""
    _, path = exports("protonet")
    argv = ["--model", path, "--support", folders / "support", "--query",
            folders / "query" / "loose.png"]
    processes = [console("predict", *argv),
                 subprocess.Popen([sys.executable, "-c", ISOLATED, ROOT / "tf_meta",
                                   *map(str, argv)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=tmp_path)]
    good, isolated = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    assert good[0] == 0, good[2][-2000:]
    assert good[1].splitlines()[2].startswith(f"{folders}/query/loose.png  ")
    assert isolated[0] == 0, isolated[2][-2000:]
    assert isolated[1].splitlines()[:3] == good[1].splitlines()[:3]
    assert isolated[1].splitlines()[-1] == str([0, 2]) + " " + str([
        "tf_meta", "tf_meta.data", "tf_meta.data.image_files", "tf_meta.data.images",
        "tf_meta.files", "tf_meta.predict"])
    assert [line for line in isolated[2].splitlines() if not NATIVE_LOG.match(line)] == [
        "tf-meta predict: error: query folder '.' has no images"]  # the empty cwd


def test_the_tf_meta_command_returns_the_subcommand_s_exit_status(folders, capsys):
    assert cli.main(["predict", "--model", str(folders), "--query", str(folders)]) == 2
    assert capsys.readouterr().err == f"tf-meta predict: error: model path '{folders}' is " \
        "not an export: no saved_model.pb in it and no integer version folder\n"


@pytest.mark.parametrize("argv,shown", [([], ["predict"]),
                                        (["predict"], ["--support", "--query", "--top_k"])])
def test_help_exits_0(argv, shown, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(option in out for option in shown)


PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_every_algorithm_s_image_preprocessing_is_graph_ops_only(algo, exports):
    """Decoding, resizing (and MAML/Reptile's inner loop) travel as TensorFlow ops: no
    Python function in the graph, which TF Serving could not run."""
    from tensorflow.core.protobuf import saved_model_pb2
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(exports(algo)[1], "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    graph = saved.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    assert {"DecodeImage", "ResizeArea"} <= ops
    assert not ops & PYTHON_OPS
