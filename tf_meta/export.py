"""SavedModel export in the layout TF Serving reads: <model base path>/<integer version>/.

Signatures of a classifier exported with the training source's `ImageContract` (train.py
always passes it), the serving contract 2 recorded in tf_meta.json as "serving_contract":
  serving_default: support_images [S, H, W, C] float32, pixels 0-255 as the data source
    provides them (any H and W, C 1 or 3: raw Omniglot as TFDS gives it), support_labels
    [S] int32 in [0, ways), query_images [Q, H', W', C'] -> logits [Q, ways],
    probabilities [Q, ways], classes [Q] int32. The contract's preprocessing
    (`data.images.to_model_pixels`) runs in the graph.
  encoded: the same with support_images [S] and query_images [Q] strings, PNG/JPEG/GIF/BMP
    bytes (TF Serving REST: {"b64": "..."}), decoded in the graph.
  named, encoded_named: as serving_default and encoded, plus support_class_names [ways]
    string -> also class_names [Q] string.
  preprocessed: serving contract 1, the model's own pixels: support_images
    [S, *input_shape] float32 0-255 after the preprocessing (bright strokes on black for
    Omniglot), support_labels, query_images [Q, *input_shape].
Exported with only an input shape (no contract), serving_default and named take the model's
own pixels, as preprocessed does, and there are no encoded signatures.
Ways are read from the support labels, so one export answers any N-way K-shot request
(MAML and Reptile: up to the size of their head). MAML and Reptile run their test-time
inner loop inside these signatures. Regression learners (sinusoids) take support_x [S, 1],
support_y [S, 1], query_x [Q, 1] and answer predictions [Q, 1].

`export_adapted` writes a learner already adapted to one support set as a plain model:
images -> probabilities, classes, class_names (regression: x -> predictions).

Requests are checked in the graph (`check_request`, `images.check_source_pixels`): pixel
ranges, polarity, sizes, and the bounds set at export (MAX_SUPPORT, MAX_QUERIES, MAX_WAYS,
MAX_VALUES); a refused request is an InvalidArgumentError naming what to change.

Every file goes through tf.io.gfile: a base path may be on any file system TensorFlow has
(gs://, ram://, ...); `_write_version` says how a version appears whole on each.
"""

import base64
import json
import os
import re
import socket
import uuid
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tf_meta import files, training
from tf_meta.data import images
from tf_meta.episode import Episode, num_ways


# Request bounds, the defaults of the exporters' keyword arguments. A real few-shot request
# stays far below them (Meta-Dataset's largest episodes: 50 ways, 500 support images, ~500
# queries); at them one request peaks at ~1-2 GB for a Conv-4 learner (README, Serving).
MAX_SUPPORT, MAX_QUERIES, MAX_WAYS = 1000, 1000, 100
# The most pixel values one image-array input may hold before its preprocessing (2**26
# float32 values, 256 MB): 1,000 raw 105x105x3 Omniglot images are 33M. Larger images go
# through the encoded signatures, which decode and shrink one image at a time.
MAX_VALUES = 2 ** 26
SERVING_CONTRACT = 2  # serving_default takes images as the source provides them


def next_version(base_path):
    """1 + the largest integer version folder under `base_path` (1 if none).

    Only ASCII-digit names are versions, as TF Serving reads them: str.isdigit also takes
    '²' or '٣', which int() refuses or misreads.
    """
    if not tf.io.gfile.isdir(base_path):
        return 1
    names = [d.rstrip("/") for d in tf.io.gfile.listdir(base_path)]  # GCS: "7/"
    versions = [int(d) for d in names if re.fullmatch("[0-9]+", d)]
    return max(versions, default=0) + 1


def check_values(x, name):
    """In-graph checks that `x` holds values the learners were trained on.

    Images ([n, H, W, C]) are the served contract's pixels: floats in [0, 255], strokes
    bright on black. A set whose largest pixel is in (0, 1] is refused as scaled to [0, 1]
    (the commonest client mistake): under 0-255 nothing in it is brighter than 1/255. All
    zeros is answered, being the same images under either scale. Other inputs (feature
    vectors) need only be finite.

    Args:
      x: [n, ...] float32 (static rank known); name: the input's name, for the messages.
    Returns:
      The last check (None when run eagerly); the checks run in order, so a NaN is named
      as such, not as out of range.
    """
    if x.shape.rank != 4:
        return tf.debugging.assert_all_finite(x, f"{name} has NaN or Inf")
    return images.check_pixels(x, name)[1]


def check_bound(count, bound, value, what, exporter):
    """An in-graph check that `count` (a scalar) is at most the export's `bound`=`value`."""
    return tf.debugging.assert_less_equal(
        count, value, message=f"{what} above {bound}={value}, the bound of this export: "
        f"re-export with {exporter}(..., {bound}=<more>) to serve more")


def check_request(support_images, support_labels, query_images, input_shape, max_ways=None,
                  bounds=None):
    """In-graph validation of a serving request; raises InvalidArgumentError, never garbage.

    Every check is a graph op, so it travels with the SavedModel: the signature's declared
    shapes are not enforced when a loaded function or TF Serving feeds a tensor, and a
    wrong-rank image batch would otherwise reach the convolutions (which abort the process).

    Args:
      support_images: [S, *input_shape] float32; support_labels: [S] int32 in [0, ways),
        every class present; query_images: [Q, *input_shape] float32.
      input_shape: the shape of one example the learner was exported for, e.g. (28, 28, 1).
      max_ways: the size of the learner's output head (MAML, Reptile, MANN, SNAIL), or None
        when any number of classes works (ProtoNet, RelationNet).
      bounds: {"max_support": n, "max_queries": n, "max_ways": n} (`request_bounds`), or
        None for no size bounds.

    Returns:
      (support_images, support_labels, query_images), each computed only after every
      check passed, with the static shapes the learner expects.
    """
    # EnsureShape checks rank and every dimension at run time, before anything reads pixels.
    support_images = tf.ensure_shape(support_images, [None, *input_shape])
    query_images = tf.ensure_shape(query_images, [None, *input_shape])
    support_labels = tf.ensure_shape(support_labels, [None])
    size = tf.size(support_labels)
    checks = [
        tf.debugging.assert_positive(size, message="support set is empty"),
        tf.debugging.assert_positive(tf.shape(query_images)[0], message="query set is empty"),
        tf.debugging.assert_equal(tf.shape(support_images)[0], size,
                                  message="support_images and support_labels differ in length"),
        tf.debugging.assert_non_negative(support_labels,
                                         message="support_labels must be >= 0"),
    ]
    if max_ways is not None:  # before the coverage checks: the head is the clearer message
        checks.append(tf.debugging.assert_less(
            support_labels, max_ways,
            message=f"support_labels must be below {max_ways}, the ways of the exported head"))
    if bounds is not None:
        checks += [check_bound(size, "max_support", bounds["max_support"], "support images",
                               "export_learner"),
                   check_bound(tf.shape(query_images)[0], "max_queries", bounds["max_queries"],
                               "query images", "export_learner")]
    uncovered = "support_labels must cover 0..ways-1, each class at least once"
    checks += [
        # A label >= S leaves some class without an example; checked before the label is
        # used as a segment count, which would otherwise allocate label-many counters.
        tf.debugging.assert_less(support_labels, size, message=uncovered),
        check_values(support_images, "support_images"),
        check_values(query_images, "query_images"),
    ]
    with tf.control_dependencies(checks):
        ways = num_ways(support_labels)
        present = tf.math.unsorted_segment_sum(tf.ones_like(support_labels), support_labels, ways)
    checked = tf.debugging.assert_positive(present, message=uncovered)
    if bounds is not None and bounds["max_ways"] < (max_ways or np.inf):  # else the head's
        with tf.control_dependencies([checked]):  # once the labels are known to be right
            checked = check_bound(ways, "max_ways", bounds["max_ways"], "ways", "export_learner")
    with tf.control_dependencies([checked]):
        # nothing reads the inputs before they are checked
        return tuple(tf.identity(t) for t in (support_images, support_labels, query_images))


def request_bounds(learner, max_support=MAX_SUPPORT, max_queries=MAX_QUERIES,
                   max_ways=MAX_WAYS):
    """The size bounds of an export's requests, as recorded in its tf_meta.json.

    max_ways becomes the learner's head when that is smaller (the head bounds it anyway).
    """
    for name, value in (("max_support", max_support), ("max_queries", max_queries),
                        ("max_ways", max_ways)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return {"max_support": int(max_support), "max_queries": int(max_queries),
            "max_ways": int(min(max_ways, learner.max_ways or max_ways))}


def serving_outputs(learner, support_images, support_labels, query_images, input_shape,
                    bounds=None, transductive=False):
    """The `serving_default` computation of a classifier: logits, probabilities, classes.

    Each query is answered on its own (`learner.independent_query_logits`) unless
    `transductive`: then the learner's own test (`query_logits`), which for MAML, Reptile
    and Relation Networks normalises all queries of the request as one BatchNorm batch.
    """
    support_images, support_labels, query_images = check_request(
        support_images, support_labels, query_images, input_shape, learner.max_ways, bounds)
    query_y = tf.zeros(tf.shape(query_images)[:1], tf.int32)  # unread by query_logits
    episode = Episode(support_images, support_labels, query_images, query_y)
    if transductive:
        return learner.outputs(learner.query_logits(episode, training=False))
    return learner.outputs(learner.independent_query_logits(episode))


class Inputs(NamedTuple):
    """The episode signature's input names for one task kind, and its label spec."""

    support: str
    labels: str
    query: str
    label_dtype: tf.DType
    label_shape: tuple

    def signature(self, input_shape):
        return [tf.TensorSpec([None, *input_shape], tf.float32, self.support),
                tf.TensorSpec([None, *self.label_shape], self.label_dtype, self.labels),
                tf.TensorSpec([None, *input_shape], tf.float32, self.query)]


# By the learner's declared task kind (`MetaLearner.task`).
INPUTS = {"classification": Inputs("support_images", "support_labels", "query_images",
                                   tf.int32, ()),
          "regression": Inputs("support_x", "support_y", "query_x", tf.float32, (1,))}


def request_body(support_images, support_labels, query_images, support_class_names=None):
    """A TF Serving REST predict body (columnar "inputs" form) for an episode signature.

    Args:
      support_images: [S, H, W, C] pixels (serving_default, preprocessed) or a list of S
        encoded images as bytes (encoded: sent as {"b64": ...}); support_labels: [S] ints;
        query_images: as support_images; support_class_names: None, or [ways] strings
        (the named signatures).
    Returns:
      {"inputs": {...}} with plain nested lists, ready for json.dump.
    """
    def plain(x):
        if isinstance(x, (list, tuple)) and x and isinstance(x[0], bytes):
            return [{"b64": base64.b64encode(b).decode("ascii")} for b in x]
        x = np.asarray(x)
        return (x.astype(np.int64) if np.issubdtype(x.dtype, np.integer) else x).tolist()

    inputs = {"support_images": plain(support_images), "support_labels": plain(support_labels),
              "query_images": plain(query_images)}
    if support_class_names is not None:
        inputs["support_class_names"] = [str(n) for n in support_class_names]
    return {"inputs": inputs}


def _with_class_names(outputs, class_names):
    """`outputs` plus class_names [Q] string: `class_names` [ways] at the answered classes.

    Raises (in the graph) unless there is exactly one name per class of the request.
    """
    ways = tf.shape(outputs["probabilities"])[-1]
    check = tf.debugging.assert_equal(
        tf.size(class_names), ways, message="support_class_names must hold one name per "
        "class, the names of support labels 0..ways-1 in order")
    with tf.control_dependencies([check]):
        return {**outputs, "class_names": tf.gather(class_names, outputs["classes"])}


NAMES_SPEC = tf.TensorSpec([None], tf.string, "support_class_names")


def _source_images(kind, contract, name, bound, max_count, exporter):
    """(TensorSpec, convert) of one input of images as the source provides them.

    kind "pixels": [n, H, W, C] float32 pixel arrays; "encoded": [n] strings of image bytes.
    convert(x) -> [n, *contract.input_shape] float32 model pixels: the count is checked
    against the export's `bound` (= `max_count`) before any pixel is read, then the
    pixels (`images.check_source_pixels`) or each image's declared size, then the
    contract's preprocessing runs.
    """
    def counted(x):
        check = check_bound(tf.shape(x)[0], bound, max_count, name.replace("_", " "), exporter)
        with tf.control_dependencies([check]):
            return tf.identity(x)

    if kind == "pixels":
        spec = tf.TensorSpec([None] * 4, tf.float32, name)

        def convert(x):
            x = images.check_source_pixels(counted(x), name, contract, MAX_VALUES)
            return images.to_model_pixels(x, contract)
    else:
        spec = tf.TensorSpec([None], tf.string, name)

        def convert(x):
            return images.decode_to_model_pixels(counted(x), contract, images.MAX_SIDE ** 2,
                                                 name)
    # One traced function, called by each signature that takes this input (not a copy in
    # each): an export traces and saves it once.
    return spec, tf.function(convert, input_signature=[spec])


SOURCE_KINDS = {"serving_default": "pixels", "encoded": "encoded"}  # signature -> input kind


def episode_signatures(learner, input_shape, image_contract, bounds, transductive):
    """The signatures of a classifier's export: name -> (function, input signature).

    One traced function (`serving_outputs` on model pixels) answers every signature; the
    others convert their inputs and call it, so the learner's graph is saved once.
    """
    model = INPUTS["classification"].signature(input_shape)

    @tf.function(input_signature=model)
    def answer(support_images, support_labels, query_images):
        return serving_outputs(learner, support_images, support_labels, query_images,
                               input_shape, bounds, transductive)

    def named(fn):
        def with_names(support_images, support_labels, query_images, support_class_names):
            return _with_class_names(fn(support_images, support_labels, query_images),
                                     support_class_names)
        return with_names

    def call(support_images, support_labels, query_images):  # calls `answer`, not a copy
        return answer(support_images, support_labels, query_images)

    def from_source(support, query):
        def converted(support_images, support_labels, query_images):
            return answer(support(support_images), support_labels, query(query_images))
        return converted

    signatures = {"preprocessed": (call, model)}
    if image_contract is None:
        return {**signatures, "serving_default": (call, model),
                "named": (named(call), [*model, NAMES_SPEC])}
    for signature, kind in SOURCE_KINDS.items():
        support_spec, support = _source_images(kind, image_contract, "support_images",
                                               "max_support", bounds["max_support"],
                                               "export_learner")
        query_spec, query = _source_images(kind, image_contract, "query_images",
                                           "max_queries", bounds["max_queries"],
                                           "export_learner")
        inputs = [support_spec, model[1], query_spec]
        signatures[signature] = (from_source(support, query), inputs)
        signatures["named" if kind == "pixels" else "encoded_named"] = (
            named(from_source(support, query)), [*inputs, NAMES_SPEC])
    return signatures


def export_learner(learner, base_path, input_shape, version=None, metadata=None,
                   max_support=MAX_SUPPORT, max_queries=MAX_QUERIES, max_ways=MAX_WAYS,
                   transductive=False, image_contract=None):
    """Writes `learner` as a TF Serving model version with the episode signatures.

    Args:
      learner: a built MetaLearner.
      base_path: the TF Serving model base path, e.g. saved_models/protonet.
      input_shape: shape of one input example (model pixels), e.g. (28, 28, 1).
      version: integer version; default next_version(base_path) when the export is done.
      metadata: optional JSON-able dict, written to <version>/assets.extra/tf_meta.json
        with the request bounds ("request_bounds"), the image contract ("image_contract")
        and the signatures' inputs ("signatures") added.
      max_support, max_queries, max_ways: the largest request served: support images,
        query images, classes (at most the head's). A larger request is refused in the
        graph, before it costs memory. Classification only: a regression request is points.
      transductive: serve the learner's own test, in which MAML, Reptile and Relation
        Networks normalise a request's queries as one BatchNorm batch (the papers' tests:
        one query then moves the answers to the others). Default: each query is answered
        on its own (`serving_outputs`). Recorded in tf_meta.json as "queries".
      image_contract: the training source's data.ImageContract (`Source.image_contract`):
        serving_default and encoded then take images as that source provides them and
        preprocess them in the graph. None: every signature takes model pixels.

    Returns:
      Path of the written version folder.

    Raises:
      OSError: the export could not be written (one line: base path and cause); nothing
        is left behind.
    """
    metadata = {**(metadata or {}),
                "queries": "one batch (transductive)" if transductive else "each on its own"}
    if learner.regression:  # targets, not labels: no class checks apply
        def serve(support, targets, query):
            episode = Episode(support, targets, query, None)
            return learner.outputs(learner.query_logits(episode, training=False) if transductive
                                   else learner.independent_query_logits(episode))
        signatures = {"serving_default": (serve, INPUTS["regression"].signature(input_shape))}
    else:
        _check_contract(image_contract, input_shape)
        bounds = request_bounds(learner, max_support, max_queries, max_ways)
        metadata["request_bounds"] = {**bounds, "max_values": MAX_VALUES}
        metadata["image_contract"] = image_contract and image_contract.to_json()
        signatures = episode_signatures(learner, input_shape, image_contract, bounds,
                                        transductive)
    return _write_version(learner, signatures, base_path, version, metadata)


def _check_contract(image_contract, input_shape):
    if image_contract is not None and tuple(image_contract.input_shape) != tuple(input_shape):
        raise ValueError(f"image_contract makes {image_contract.input_shape} pixels but the "
                         f"learner takes {tuple(input_shape)}")


def export_adapted(learner, support_images, support_labels, base_path, version=None,
                   metadata=None, max_queries=MAX_QUERIES, transductive=False,
                   image_contract=None, class_names=None):
    """Writes the learner adapted to one support set as a plain classifier model version.

    MAML/FOMAML/Reptile run their test-time inner loop once, here; the export holds the
    adapted weights (and the support set, which BatchNorm's batch statistics may use), and
    its signatures are
      serving_default: images [n, H, W, C] float32 pixels as the source provides them
        (model pixels [n, *input_shape] without an image_contract),
      encoded: images [n] strings of PNG/JPEG/GIF/BMP bytes (with an image_contract),
      preprocessed: images [n, *input_shape] model pixels,
      -> probabilities [n, ways], classes [n] int32, class_names [n] string,
    answering exactly what `learner.independent_score(adapted weights, episode)`
    answers in memory (`score` with `transductive=True`).

    Args:
      learner: a built learner that adapts at test time (declares ADAPTS: has `adapt` and
        `score`).
      support_images: [S, *input_shape] model pixels; support_labels: [S] int in [0, ways).
      base_path, version, metadata, image_contract: as in export_learner.
      max_queries: the most images one request may hold (classification; recorded in
        tf_meta.json as "request_bounds").
      transductive: as in export_learner: by default each image is answered on its own
        (`learner.independent_score`), else all images of a request as the test's batch.
      class_names: [ways] names of the support classes, answered as class_names and
        recorded in tf_meta.json; default "0", "1", ...

    Returns:
      Path of the written version folder.
    """
    if not learner.ADAPTS:
        raise ValueError(f"{type(learner).__name__} does not adapt to a support set: export it "
                         "with export_learner, whose requests carry their support set")
    support_images = tf.cast(support_images, tf.float32)
    support_labels = tf.cast(support_labels, INPUTS[learner.task].label_dtype)
    input_shape = tuple(support_images.shape[1:])
    if not learner.regression:
        _check_contract(image_contract, input_shape)
        check_request(support_images, support_labels, support_images, input_shape,
                      learner.max_ways)
    fast = [tf.constant(w) for w in learner.adapt(support_images, support_labels,
                                                   training=False)]
    metadata = {**(metadata or {}),
                "queries": "one batch (transductive)" if transductive else "each on its own"}

    def score(x):
        episode = Episode(support_images, support_labels, x, None)
        return learner.outputs(learner.score(fast, episode, training=False) if transductive
                               else learner.independent_score(fast, episode))

    model = tf.TensorSpec([None, *input_shape], tf.float32, "images")
    if learner.regression:  # points, not images: a curve may be asked at many
        return _write_version(learner, {"serving_default": (score, [model])}, base_path,
                              version, metadata)
    ways = int(tf.reduce_max(support_labels)) + 1
    names = [str(n) for n in class_names] if class_names is not None else [
        str(c) for c in range(ways)]
    if len(names) != ways:
        raise ValueError(f"class_names has {len(names)} names for the {ways} support classes")
    metadata.update(request_bounds={"max_queries": request_bounds(
        learner, max_queries=max_queries)["max_queries"], "max_values": MAX_VALUES},
        image_contract=image_contract and image_contract.to_json(), class_names=names)

    @tf.function(input_signature=[model])
    def answer(x):
        x = tf.ensure_shape(x, [None, *input_shape])  # see check_request
        checks = [check_values(x, "images"),
                  check_bound(tf.shape(x)[0], "max_queries", max_queries, "images",
                              "export_adapted")]
        with tf.control_dependencies(checks):
            outputs = score(tf.identity(x))
        outputs.pop("logits", None)  # the adapted export answers probabilities and classes
        return {**outputs, "class_names": tf.gather(tf.constant(names), outputs["classes"])}

    def converted(convert):
        def serve(images):
            return answer(convert(images))
        return serve

    signatures = {"preprocessed": (converted(tf.identity), [model])}
    if image_contract is None:
        signatures["serving_default"] = signatures["preprocessed"]
    else:
        for signature, kind in SOURCE_KINDS.items():
            spec, convert = _source_images(kind, image_contract, "images", "max_queries",
                                           max_queries, "export_adapted")
            signatures[signature] = (converted(convert), [spec])
    return _write_version(learner, signatures, base_path, version, metadata)


TEMP_PREFIX = ".export-"  # + "<pid>@<host>-<random>": a folder TF Serving ignores (not an integer)


def _writer_is_gone(name):
    """Whether the export that made temporary folder `name` is dead: its process on this
    machine is gone. An export from another machine (a shared or remote base path) is
    never judged dead: its process cannot be asked."""
    owner = name[len(TEMP_PREFIX):].rsplit("-", 1)[0]
    pid, _, host = owner.partition("@")  # no host: written before hosts were recorded
    if host and host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):  # not ours, or alive under another user
        pass
    return False


def _remove(folder):
    """Removes `folder` and what it holds, as far as the file system lets it."""
    try:
        tf.io.gfile.rmtree(folder)
    except tf.errors.OpError:
        pass


def _remove_abandoned_exports(base_path):
    """Deletes temporary export folders whose writing process is gone (killed mid-export)."""
    for name in tf.io.gfile.listdir(base_path):
        name = name.rstrip("/")
        if name.startswith(TEMP_PREFIX) and _writer_is_gone(name):
            _remove(os.path.join(base_path, name))


def _write_version(learner, signatures, base_path, version, metadata):
    """Saves `signatures` (name -> (function, input signature)) into base_path/<version>,
    never half-written for TF Serving, with their inputs listed in the metadata's
    "signatures".

    The SavedModel is written to a hidden temporary folder beside the versions (a name TF
    Serving ignores) and then claimed as its version folder (`_claim`): on a local file
    system by renaming the folder, at once; elsewhere (gs://, s3://, ram://: no atomic
    folder rename) by moving its files in, saved_model.pb last, so a poller that finds
    saved_model.pb finds the variables it needs (TF Serving retries a version whose load
    failed for want of it). A failed export leaves no temporary folder behind; a process
    killed mid-export leaves its own, which the next export from this machine removes.

    Raises:
      OSError: one line naming `base_path` and the cause (TensorFlow's file errors too).
      ValueError: an explicit `version` that already exists, or weights holding NaN or
        Inf (a served model would answer with them: nothing is written).
    """
    bad = training.non_finite(learner.variables)
    if bad:
        raise ValueError(f"cannot export to '{base_path}': {len(bad)} variables hold NaN or Inf "
                         f"({training.variable_names(bad)})")
    tmp = None
    try:
        tf.io.gfile.makedirs(base_path)
        _remove_abandoned_exports(base_path)
        tmp = os.path.join(base_path, f"{TEMP_PREFIX}{os.getpid()}@{socket.gethostname()}-"
                                      f"{uuid.uuid4().hex}")
        archive = keras.export.ExportArchive()
        archive.track(learner)
        for name, (fn, signature) in signatures.items():
            archive.add_endpoint(name=name, fn=fn, input_signature=signature)
        archive.write_out(tmp, verbose=False)
        if metadata is not None:
            metadata = {**metadata, "serving_contract": SERVING_CONTRACT, "signatures": {
                name: [spec.name for spec in signature]
                for name, (_, signature) in sorted(signatures.items())}}
            tf.io.gfile.makedirs(os.path.join(tmp, "assets.extra"))
            with tf.io.gfile.GFile(os.path.join(tmp, "assets.extra", "tf_meta.json"), "w") as f:
                json.dump(metadata, f, indent=2, sort_keys=True)
        return _claim(tmp, base_path, version)
    except BaseException as e:
        if tmp is not None:
            _remove(tmp)
        if isinstance(e, (OSError, tf.errors.OpError)):  # disk full, read-only, ...
            cause = " ".join(files.error_cause(e).split())
            raise OSError(f"cannot export to {base_path!r}: {cause}") from e
        raise


def _claim(tmp, base_path, version):
    """Makes the finished folder `tmp` its version folder; returns that path.

    Locally a rename (rename(2) is atomic; gfile refuses an existing target), so of two
    exports that picked the same number one gets it and the other takes the next one: no
    export overwrites or loses another. Elsewhere `files.move_files`, whose first move
    refuses an existing file, so an export that finds its number taken by then takes the
    next one; two exports to one remote base path at the same moment can still mix their
    files (TF's file systems offer no exclusive create), so keep to one at a time there. A
    move failing midway leaves a version folder without saved_model.pb, which TF Serving
    and tf-meta predict refuse to load.
    """
    local, number = files.is_local(base_path), 0
    while True:
        number = int(version) if version is not None else max(next_version(base_path),
                                                               number + 1)
        final = os.path.join(base_path, str(number))
        if version is not None and tf.io.gfile.exists(final):
            raise ValueError(f"export version folder {final!r} already exists")
        try:
            if local:
                tf.io.gfile.rename(tmp, final)
            else:
                tf.io.gfile.makedirs(final)  # listed at once (ram:// lists made folders only)
                files.move_files(tmp, final, last="saved_model.pb")
                _remove(tmp)
            return final
        except tf.errors.OpError as e:
            # Taken meanwhile: gfile's own check, or rename(2)'s ENOTEMPTY just after it.
            taken = (isinstance(e, tf.errors.AlreadyExistsError)
                     or local and tf.io.gfile.exists(final))
            if version is not None or not taken:
                raise
