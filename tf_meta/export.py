"""SavedModel export in the layout TF Serving reads: <model base path>/<integer version>/.

The `serving_default` signature is the same for every classification algorithm:
  support_images [S, *input_shape] float32 pixels, support_labels [S] int32 in [0, ways),
  query_images [Q, *input_shape] float32 pixels
  -> logits [Q, ways] float32, probabilities [Q, ways] float32, classes [Q] int32.
Ways are read from the support labels, so one export answers any N-way K-shot request
(MAML and Reptile: up to the size of their head). MAML and Reptile run their test-time
inner loop inside this signature. Regression learners (sinusoids) take support_x [S, 1],
support_y [S, 1], query_x [Q, 1] and answer predictions [Q, 1].

`export_adapted` writes a learner already adapted to one support set as a plain model:
images -> probabilities, classes (regression: x -> predictions).
"""

import json
import os
import shutil
import tempfile
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tf_meta.episode import Episode, num_ways


def next_version(base_path):
    """1 + the largest integer version folder under `base_path` (1 if none)."""
    if not os.path.isdir(base_path):
        return 1
    versions = [int(d) for d in os.listdir(base_path) if d.isdigit()]
    return max(versions, default=0) + 1


def check_writable(path):
    """Raises ValueError unless folder `path` exists and is writable, or can be created.

    For any folder a run will write (model dir, export base path), checked before training
    so a bad path costs a second, not a training run.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing):  # the nearest ancestor that exists decides
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"cannot write {path!r}: {existing!r} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path!r}: {existing!r} is not writable")


def check_request(support_images, support_labels, query_images, input_shape, max_ways=None):
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
    uncovered = "support_labels must cover 0..ways-1, each class at least once"
    checks += [
        # A label >= S leaves some class without an example; checked before the label is
        # used as a segment count, which would otherwise allocate label-many counters.
        tf.debugging.assert_less(support_labels, size, message=uncovered),
        tf.debugging.assert_all_finite(support_images, "support_images has NaN or Inf"),
        tf.debugging.assert_all_finite(query_images, "query_images has NaN or Inf"),
    ]
    with tf.control_dependencies(checks):
        ways = num_ways(support_labels)
        present = tf.math.unsorted_segment_sum(tf.ones_like(support_labels), support_labels, ways)
    with tf.control_dependencies([tf.debugging.assert_positive(present, message=uncovered)]):
        # nothing reads the inputs before they are checked
        return tuple(tf.identity(t) for t in (support_images, support_labels, query_images))


def serving_outputs(learner, support_images, support_labels, query_images, input_shape):
    """The `serving_default` computation of a classifier: logits, probabilities, classes."""
    support_images, support_labels, query_images = check_request(
        support_images, support_labels, query_images, input_shape, learner.max_ways)
    query_y = tf.zeros(tf.shape(query_images)[:1], tf.int32)  # unread by query_logits
    episode = Episode(support_images, support_labels, query_images, query_y)
    return learner.outputs(learner.query_logits(episode, training=False))


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


def request_body(support_images, support_labels, query_images):
    """A TF Serving REST predict body (columnar "inputs" form) for `serving_default`.

    Args:
      support_images: [S, *input_shape] pixels; support_labels: [S] ints;
      query_images: [Q, *input_shape] pixels. Arrays or tensors.
    Returns:
      {"inputs": {...}} with plain nested lists, ready for json.dump.
    """
    def plain(x):
        x = np.asarray(x)
        return (x.astype(np.int64) if np.issubdtype(x.dtype, np.integer) else x).tolist()

    return {"inputs": {"support_images": plain(support_images),
                       "support_labels": plain(support_labels),
                       "query_images": plain(query_images)}}


def export_learner(learner, base_path, input_shape, version=None, metadata=None):
    """Writes `learner` as a TF Serving model version with the episode signature.

    Args:
      learner: a built MetaLearner.
      base_path: the TF Serving model base path, e.g. saved_models/protonet.
      input_shape: shape of one input example, e.g. (28, 28, 1).
      version: integer version; default next_version(base_path).
      metadata: optional JSON-able dict, written to <version>/assets.extra/tf_meta.json.

    Returns:
      Path of the written version folder.
    """
    def serve(support, labels, query):
        if learner.regression:  # targets, not labels: no class checks apply
            return learner.outputs(learner.query_logits(Episode(support, labels, query, None),
                                                        training=False))
        return serving_outputs(learner, support, labels, query, input_shape)

    signature = INPUTS[learner.task].signature(input_shape)
    return _write_version(learner, serve, signature, base_path, version, metadata)


def export_adapted(learner, support_images, support_labels, base_path, version=None,
                   metadata=None):
    """Writes the learner adapted to one support set as a plain classifier model version.

    MAML/FOMAML/Reptile run their test-time inner loop once, here; the export holds the
    adapted weights (and the support set, which BatchNorm's batch statistics may use), and
    its `serving_default` signature is
      images [n, *input_shape] float32 pixels -> probabilities [n, ways], classes [n] int32,
    answering exactly what `learner.score(adapted weights, episode)` answers in memory.

    Args:
      learner: a built learner that adapts at test time (declares ADAPTS: has `adapt` and
        `score`).
      support_images: [S, *input_shape] pixels; support_labels: [S] int in [0, ways).
      base_path, version, metadata: as in export_learner.

    Returns:
      Path of the written version folder.
    """
    if not learner.ADAPTS:
        raise ValueError(f"{type(learner).__name__} does not adapt to a support set: export it "
                         "with export_learner, whose requests carry their support set")
    support_images = tf.cast(support_images, tf.float32)
    support_labels = tf.cast(support_labels, INPUTS[learner.task].label_dtype)
    if not learner.regression:
        check_request(support_images, support_labels, support_images,
                      support_images.shape[1:], learner.max_ways)
    fast = [tf.constant(w) for w in learner.adapt(support_images, support_labels,
                                                   training=False)]

    def serve(images):
        images = tf.ensure_shape(images, [None, *support_images.shape[1:]])  # see check_request
        with tf.control_dependencies([tf.debugging.assert_all_finite(
                images, "images has NaN or Inf")]):
            images = tf.identity(images)
        episode = Episode(support_images, support_labels, images, None)
        outputs = learner.outputs(learner.score(fast, episode, training=False))
        outputs.pop("logits", None)  # the adapted export answers probabilities and classes
        return outputs

    signature = [tf.TensorSpec([None, *support_images.shape[1:]], tf.float32, "images")]
    return _write_version(learner, serve, signature, base_path, version, metadata)


TEMP_PREFIX = ".export-"  # + writer pid + "-": a folder TF Serving ignores (not an integer)


def _remove_abandoned_exports(base_path):
    """Deletes temporary export folders whose writing process is gone (killed mid-export)."""
    for name in os.listdir(base_path):
        if not name.startswith(TEMP_PREFIX):
            continue
        pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
            continue
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base_path, name), ignore_errors=True)
        except (ValueError, PermissionError):  # not ours, or alive under another user
            continue


def _write_version(learner, serve, signature, base_path, version, metadata):
    """Saves `serve` as serving_default into base_path/<version>, atomically.

    The SavedModel is written to a hidden temporary folder beside the versions and renamed
    into place, so TF Serving (which polls for integer folders) never sees a partial one
    and a failed export leaves nothing behind. A process killed mid-export leaves its hidden
    folder, which the next export removes.
    """
    version = next_version(base_path) if version is None else int(version)
    final = os.path.join(base_path, str(version))
    if os.path.exists(final):
        raise ValueError(f"export version folder {final!r} already exists")
    os.makedirs(base_path, exist_ok=True)
    _remove_abandoned_exports(base_path)
    tmp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=base_path)
    try:
        archive = keras.export.ExportArchive()
        archive.track(learner)
        archive.add_endpoint(name="serving_default", fn=serve, input_signature=signature)
        archive.write_out(tmp, verbose=False)
        if metadata is not None:
            os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
            with open(os.path.join(tmp, "assets.extra", "tf_meta.json"), "w") as f:
                json.dump(metadata, f, indent=2, sort_keys=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
