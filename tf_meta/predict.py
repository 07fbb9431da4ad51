"""`tf-meta predict`: classify image files with an export, through its SavedModel alone.

    tf-meta predict --model MODEL [--support DIR] --query DIR_OR_FILE [...]
                    [--csv FILE] [--json FILE] [--top_k N]

Nothing of tf_meta's learners, algorithms or training runs: the files' bytes go to the
export's `encoded_named` signature (an episode export: support set and queries in one
request) or `encoded` (an export adapted to its support set, `export.export_adapted`,
which answers its own class names), and the graph decodes and preprocesses them as
training did. This module imports only TensorFlow, NumPy, the standard library and
`tf_meta.data.image_files` (regular files only, sizes read before decoding).

Decisions:
  --model: a version folder (holding saved_model.pb), or a model base path, whose
    highest integer version folder (ASCII digits only) is used, as TF Serving picks it.
    Its assets.extra/tf_meta.json (request bounds, class names, query mode) is required.
  --support: one sub-folder of images per class, the classes in sorted name order (as
    `tf_meta.data.folder`): labels 0, 1, ... and support_class_names follow that order.
    Hidden names (starting with ".") are skipped, and so are entries not named like
    images (.png, .jpg, .jpeg, .gif, .bmp, any case); an entry of a class folder named
    like one must be a PNG/JPEG/GIF/BMP regular file (or a link to one), and images loose
    beside the class folders are refused: no image is silently left out. An adapted
    export takes no --support. --support and --query are local paths (os.stat first, as
    data.folder); --model, --csv and --json may be any tf.io.gfile path.
  --query: files (each must be an image, whatever its name) and folders, in the order
    given. A folder's images are queries (sorted), then the images of its sub-folders (one
    level, sorted), queries whose true class is the sub-folder's name, which must be one
    of the model's classes: their accuracy is printed and written.
  Request bounds (tf_meta.json "request_bounds"): queries above max_queries are sent in
    several requests when the export answers each query on its own ("queries": "each on
    its own"; the answers are then the same), and refused when it answers them as one
    batch (transductive): splitting would change the answers. Support images above
    max_support or classes above max_ways are refused.
  Bad input, an export without `encoded` signatures (written without an image contract,
    or before serving contract 2) and a request the graph refuses end the command with
    one line on stderr and exit status 2. An image the graph refuses is named: after a
    refusal each support image is sent alone, then each query with the support set,
    until one is refused; the line quotes the graph's reason.

Output: on stdout a line naming the model, the classes and counts, then one row a query:
  query, true (only when some query has a true class), class (predicted), probability,
  next (the following top_k - 1 classes, "name probability" each), and the accuracy.
  --csv FILE: a header row, then one row a query: query, true_class (empty if none),
    class, probability, and p(<name>) for every class in the export's class order.
  --json FILE: {"model": version folder, "algo", "signature", "classes": [ways names],
    "queries": [{"query", "true_class" (or null), "class", "probability",
    "probabilities": [ways, in "classes" order]}], "accuracy": null or
    {"correct", "total", "accuracy"}}.
  Both are written through tf.io.gfile, atomically (a temporary file renamed into place).
"""

import argparse
import csv
import io
import json
import os
import re
import sys

import numpy as np
import tensorflow as tf

from tf_meta import files
from tf_meta.data import image_files

EACH_ON_ITS_OWN = "each on its own"  # tf_meta.json "queries" of a non-transductive export
RE_EXPORT = ("re-export it with this tf_meta (train.py, or export.export_learner / "
             "export_adapted with image_contract=<the source's ImageContract>)")


DESCRIPTION = """Classify image files with a tf-meta export (its SavedModel), no retraining.

--support holds one sub-folder of images (PNG, JPEG, GIF, BMP) per class; the classes are
named after the sub-folders, in sorted order. --query takes image files and folders; the
images of a query folder's sub-folders have the sub-folder's name as their true class,
and the accuracy is printed. An export adapted to its support set takes no --support.

Prints a row a query: the predicted class, its probability and the next most probable
classes (--top_k); --csv and --json write every class's probability. Bad input: one
line on stderr, exit status 2."""


class PredictError(Exception):
    """Bad input or a refused request: one line for stderr, exit status 2."""


def resolve_model(path):
    """The version folder of `path`: itself if it holds saved_model.pb, else the highest
    ASCII-digit sub-folder (TF Serving's choice), which then must hold one."""
    try:
        return _resolve_model(path)
    except tf.errors.OpError as e:  # e.g. no permission to list it
        raise PredictError(f"cannot read model path {path!r}: {one_line(e)}") from None


def _resolve_model(path):
    if not tf.io.gfile.isdir(path):
        raise PredictError(f"model path {path!r} " + ("is not a folder" if tf.io.gfile.exists(
            path) else "does not exist"))
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = [d.rstrip("/") for d in tf.io.gfile.listdir(path)]
    versions = [d for d in versions if re.fullmatch("[0-9]+", d)
                and tf.io.gfile.isdir(os.path.join(path, d))]
    if not versions:
        raise PredictError(f"model path {path!r} is not an export: no saved_model.pb in it "
                           "and no integer version folder")
    version = os.path.join(path, max(versions, key=int))
    if not tf.io.gfile.exists(os.path.join(version, "saved_model.pb")):
        raise PredictError(f"model path {path!r}: its highest version {version!r} holds no "
                           "saved_model.pb, so it is not an export")
    return version


def read_metadata(version):
    """The export's assets.extra/tf_meta.json as a dict."""
    file = os.path.join(version, "assets.extra", "tf_meta.json")
    try:
        with tf.io.gfile.GFile(file) as f:
            meta = json.load(f)
    except tf.errors.NotFoundError:
        raise PredictError(f"{version!r} has no assets.extra/tf_meta.json, so it is not a "
                           f"tf_meta export predict can read: {RE_EXPORT}") from None
    except (ValueError, tf.errors.OpError) as e:
        raise PredictError(f"cannot read {file!r}: {one_line(e)}") from None
    if not isinstance(meta, dict):
        raise PredictError(f"{file!r} is not a JSON object")
    return meta


def signature_of(meta, version, support):
    """"encoded_named" (episode export: `support` is a folder) or "encoded" (adapted)."""
    signatures = meta.get("signatures") or {}
    if "encoded_named" in signatures:
        if support is None:
            raise PredictError(f"{version!r} classifies queries against a support set: pass "
                               "--support DIR, one sub-folder of images per class")
        return "encoded_named"
    if signatures.get("encoded") == ["images"]:
        if support is not None:
            raise PredictError(f"{version!r} is adapted to its own support set (classes: "
                               f"{', '.join(map(str, meta.get('class_names', [])))}): it takes no "
                               "--support; leave it out")
        return "encoded"
    raise PredictError(
        f"{version!r} has no 'encoded' signature (serving contract "
        f"{meta.get('serving_contract', 1)}, image contract "
        f"{'none' if not meta.get('image_contract') else 'recorded'}), so it cannot take "
        f"image files: {RE_EXPORT}")


def listing(folder):
    """Sorted names in `folder`, hidden ones (starting with ".") left out, as data.folder."""
    try:
        return image_files.listing(folder)
    except ValueError as e:
        raise PredictError(str(e)) from None


def image_names(folder, class_folder):
    """Sorted paths of the entries of `folder` named like images. In a class folder all of
    them (image_files.read then refuses anything but an image file, a folder too, as
    data.folder does); elsewhere folders are class folders, left out."""
    return [os.path.join(folder, n) for n in listing(folder) if image_files.is_image_name(n)
            and (class_folder or not os.path.isdir(os.path.join(folder, n)))]


def class_folders(folder):
    return [n for n in listing(folder) if os.path.isdir(os.path.join(folder, n))]


def read_support(folder):
    """(class names [ways], files [S], labels [S]) of a folder of class sub-folders."""
    if not os.path.isdir(folder):
        raise PredictError(f"support folder {folder!r} does not exist")
    names = class_folders(folder)
    if not names:
        raise PredictError(f"support folder {folder!r} has no class sub-folders (one "
                           "sub-folder of images per class)")
    loose = image_names(folder, False)
    if loose:
        raise PredictError(f"support folder {folder!r} has images outside its class "
                           f"sub-folders, e.g. {loose[0]!r}: move each into its class's folder")
    files, labels = [], []
    for label, name in enumerate(names):
        found = image_names(os.path.join(folder, name), True)
        if not found:
            raise PredictError(f"class folder {os.path.join(folder, name)!r} has no images")
        files += found
        labels += [label] * len(found)
    return names, files, labels


def read_queries(paths):
    """[(file, true class name or None)] of the --query files and folders, in order."""
    queries = []
    for path in paths:
        if os.path.isdir(path):
            found = [(f, None) for f in image_names(path, False)]
            for name in class_folders(path):
                files = image_names(os.path.join(path, name), True)
                if not files:
                    raise PredictError(f"query class folder {os.path.join(path, name)!r} "
                                       "has no images")
                found += [(f, name) for f in files]
            if not found:
                raise PredictError(f"query folder {path!r} has no images")
            queries += found
        elif os.path.lexists(path):
            queries.append((path, None))
        else:
            raise PredictError(f"query path {path!r} does not exist")
    return queries


def file_bytes(files):
    """[n] bytes of image files, each first read by image_files.read: a regular file, a
    PNG/JPEG/GIF/BMP of at most image_files.MAX_PIXELS (the export's own bound) that
    decodes."""
    contents = []
    for file in files:
        try:
            image_files.read(file, image_files.MAX_PIXELS)
            with open(file, "rb") as f:
                contents.append(f.read())
        except ValueError as e:
            raise PredictError(str(e).replace(", or pass a larger max_pixels to "
                                              "tf_meta.data.folder", "")) from None
        except OSError as e:
            raise PredictError(f"cannot read image {file!r}: {e.strerror or e}") from None
    return contents


def check_bounds(meta, support_count, ways, query_count):
    """Refuses a request over the export's request_bounds; returns the queries a call."""
    bounds = meta.get("request_bounds") or {}
    for what, count, bound in (("support images", support_count, "max_support"),
                               ("classes", ways, "max_ways")):
        if count is not None and bound in bounds and count > bounds[bound]:
            raise PredictError(f"{count} {what}, above {bound}={bounds[bound]} of this "
                               f"export: use fewer, or re-export with {bound}=<more>")
    chunk = bounds.get("max_queries", query_count)
    if query_count > chunk and meta.get("queries", EACH_ON_ITS_OWN) != EACH_ON_ITS_OWN:
        raise PredictError(f"{query_count} query images, above max_queries={chunk} of this "
                           "export, which answers its queries as one batch (transductive): "
                           f"split, the answers would change; send at most {chunk}")
    return chunk


def one_line(error):
    """The reason of a TensorFlow (or other) error, on one line: an assertion's message
    (and its value when the message ends with ':'), else the error's own first line."""
    message = getattr(error, "message", None) or str(error)
    asserted = re.search(r"assertion failed: \[(.*)\]", message)
    if asserted:
        parts = asserted.group(1).split("] [")
        reason = parts[0] + (f" {parts[1]}" if parts[0].endswith(":") and len(parts) > 1
                             else "")
    else:
        lines = [line for line in message.splitlines() if line.strip()]
        ends = [i for i, line in enumerate(lines) if "[[{{node" in line]
        reason = lines[ends[0] - 1] if ends and ends[0] > 0 else (lines or [""])[0]
    reason = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", reason).replace("\\'", "'")
    return " ".join(reason.split())


def call(fn, signature, support, support_labels, class_names, queries):
    """One request; its outputs as NumPy. support: [S] bytes or None (adapted export)."""
    query = tf.constant(queries, tf.string)
    if signature == "encoded":
        outputs = fn(images=query)
    else:
        outputs = fn(support_images=tf.constant(support, tf.string),
                     support_labels=tf.constant(support_labels, tf.int32), query_images=query,
                     support_class_names=tf.constant(class_names, tf.string))
    return {k: v.numpy() for k, v in outputs.items()}


def refused(fn, signature, support, files, contents, error):
    """The PredictError of a refused request, naming the first image refused alone: each
    support image as a 1-way 1-shot request (itself the query), then each query with the
    whole support set (an adapted export: each image alone)."""
    names, support_files, labels, support_contents = support or ([], [], [], [])
    probes = [(file, ([image], [0], ["?"], [image]))
              for file, image in zip(support_files, support_contents)]
    probes += [(file, (support_contents, labels, names, [image]))
               for file, image in zip(files, contents)]
    for file, request in probes:
        try:
            call(fn, signature, *request)
        except tf.errors.InvalidArgumentError as alone:
            return PredictError(f"the model refuses image {file!r}: {one_line(alone)}")
    return PredictError(f"the model refuses the request: {one_line(error)}")


def predict(fn, signature, chunk, support, query_contents, query_files):
    """probabilities [Q, ways] float32, classes [Q] int and their names [Q] str, asked in
    requests of at most `chunk` queries.

    support: (class names [ways], files [S], labels [S], contents [S]), or None.
    """
    names, _, labels, support_contents = support or ([], [], [], None)
    probabilities, predicted, indices = [], [], []
    for start in range(0, len(query_contents), chunk):
        queries = query_contents[start:start + chunk]
        try:
            outputs = call(fn, signature, support_contents, labels, names, queries)
        except tf.errors.InvalidArgumentError as e:
            raise refused(fn, signature, support, query_files[start:start + chunk], queries,
                          e) from None
        probabilities.append(outputs["probabilities"])
        indices.append(outputs["classes"])
        predicted += [n.decode("utf-8") for n in outputs["class_names"]]
    return np.concatenate(probabilities), np.concatenate(indices), predicted


def results(queries, probabilities, indices, predicted):
    """[{query, true_class, class, probability, probabilities}], and the accuracy dict of
    the queries with a true class (None if none has)."""
    rows = [{"query": file, "true_class": truth, "class": name, "probability": float(p[i]),
             "probabilities": [float(x) for x in p]}
            for (file, truth), p, i, name in zip(queries, probabilities, indices, predicted)]
    judged = [r for r in rows if r["true_class"] is not None]
    if not judged:
        return rows, None
    correct = sum(r["class"] == r["true_class"] for r in judged)
    return rows, {"correct": correct, "total": len(judged), "accuracy": correct / len(judged)}


def table(rows, classes, top_k):
    """The stdout table, one row a query (see the module docstring)."""
    truths = any(r["true_class"] is not None for r in rows)
    header = ["query"] + ["true"] * truths + ["class", "probability"] + ["next"] * (top_k > 1)
    lines = [header]
    for r in rows:
        order = [i for i in np.argsort(r["probabilities"], kind="stable")[::-1]
                 if classes[i] != r["class"]][:top_k - 1]
        lines.append([r["query"]] + [r["true_class"] or ""] * truths
                     + [r["class"], f"{r['probability']:.4f}"]
                     + [", ".join(f"{classes[i]} {r['probabilities'][i]:.4f}"
                                  for i in order)] * (top_k > 1))
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)


def csv_text(rows, classes):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["query", "true_class", "class", "probability"]
                    + [f"p({name})" for name in classes])
    for r in rows:
        writer.writerow([r["query"], r["true_class"] or "", r["class"], r["probability"]]
                        + r["probabilities"])
    return out.getvalue()


def check_output(path):
    """Refuses an output path whose folder is missing or which is a folder."""
    folder = os.path.dirname(path) or "."
    if not tf.io.gfile.isdir(folder):
        raise PredictError(f"cannot write {path!r}: folder {folder!r} does not exist")
    if tf.io.gfile.isdir(path):
        raise PredictError(f"cannot write {path!r}: it is a folder")


def write_atomically(path, text):
    """Writes `text` to `path` via a temporary file beside it, renamed into place."""
    try:
        files.write_whole(path, text, f".tmp-{os.getpid()}")
    except OSError as e:
        raise PredictError(str(e)) from None


def classify(args):
    """The command; returns the stdout text. Raises PredictError."""
    version = resolve_model(args.model)
    meta = read_metadata(version)
    signature = signature_of(meta, version, args.support)
    for path in (args.csv, args.json):
        if path:
            check_output(path)
    support = read_support(args.support) if args.support else None
    classes = support[0] if support else [str(n) for n in meta.get("class_names", [])]
    queries = read_queries(args.query)
    strangers = sorted({truth for _, truth in queries if truth is not None} - set(classes))
    if strangers:
        raise PredictError(f"query class folder {strangers[0]!r} names no class of the "
                           f"model's ({', '.join(classes)}): rename it, or put its images "
                           "directly in the query folder")
    if support:
        chunk = check_bounds(meta, len(support[1]), len(classes), len(queries))
        support = (*support, file_bytes(support[1]))
    else:  # the adapted export's support set is in it
        chunk = check_bounds(meta, None, None, len(queries))
    files = [file for file, _ in queries]
    contents = file_bytes(files)
    try:
        fn = tf.saved_model.load(version).signatures[signature]
    except Exception as e:  # a damaged export: protobuf, TF or Python errors
        raise PredictError(f"cannot load {signature!r} of {version!r}: "
                           f"{one_line(e) or type(e).__name__}") from None
    rows, accuracy = results(queries, *predict(fn, signature, chunk, support, contents, files))
    if args.csv:
        write_atomically(args.csv, csv_text(rows, classes))
    if args.json:
        write_atomically(args.json, json.dumps(
            {"model": version, "algo": meta.get("algo"), "signature": signature,
             "classes": classes, "queries": rows, "accuracy": accuracy}, indent=2,
            ensure_ascii=False) + "\n")
    head = (f"model {version} ({meta.get('algo', 'algorithm unrecorded')}): "
            + count(len(classes), "class", "classes")
            + (f", {count(len(support[1]), 'support image', 'support images')}" if support
               else " (adapted)") + f", {count(len(rows), 'query', 'queries')}")
    tail = accuracy and (f"\naccuracy: {accuracy['correct']}/{accuracy['total']} = "
                         f"{100 * accuracy['accuracy']:.1f}% (queries in class sub-folders)")
    return f"{head}\n{table(rows, classes, min(args.top_k, len(classes)))}{tail or ''}"


def count(n, one, many):
    return f"{n} {one if n == 1 else many}"


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser):
    """The command's arguments, on `parser` (tf_meta.cli's subparser, or main's)."""
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="an export's version folder, or its model base path (the "
                        "highest integer version is used)")
    parser.add_argument("--support", metavar="DIR", help="folder of class sub-folders of "
                        "images (episode exports; an adapted export has its own)")
    parser.add_argument("--query", required=True, nargs="+", metavar="DIR_OR_FILE",
                        help="image files and folders; a folder's sub-folders are true "
                        "classes, and the accuracy is reported")
    parser.add_argument("--csv", metavar="FILE",
                        help="write every query's class probabilities here (CSV)")
    parser.add_argument("--json", metavar="FILE",
                        help="write every query's class probabilities here (JSON)")
    parser.add_argument("--top_k", "--top-k", type=positive, default=3, metavar="N",
                        help="classes shown a query on stdout (default 3)")
    return parser


def run(args):
    """Runs the command for parsed `args`; returns the exit status (0, or 2 on bad input)."""
    try:
        print(classify(args))
    except PredictError as e:  # one line, whatever the names in it hold
        reason = str(e).replace("\r", "\\r").replace("\n", "\\n")
        print(f"tf-meta predict: error: {reason}", file=sys.stderr)
        return 2
    return 0


def main(argv=None):
    """`tf-meta predict` without tf_meta.cli (`python -m tf_meta.predict`); returns the exit
    status."""
    parser = argparse.ArgumentParser(prog="tf-meta predict", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
