"""A Source from labelled arrays held in memory (keras.datasets, tfds.as_numpy, NumPy files)."""

import numpy as np

from tf_meta.data.images import ImageContract
from tf_meta.data.sources import Source


def from_arrays(examples, labels, class_names=None):
    """A Source from labelled arrays, as a dataset held in memory gives them (keras.datasets,
    tfds.as_numpy, your own NumPy files).

    Images ([n, H, W, C], C 1 or 3) must be pixels 0-255, as learners rescale them in their
    graph (and exports serve them so): uint8, or floats in [0, 255]. Floats whose largest
    value is at most 1 are refused, as are values outside [0, 255] (images scaled to [0, 1]
    would train on near-black images without a word). Their image contract is the model's
    own size (an export serves [H, W, C] images, any other size resized to it). Anything
    else is a feature vector source, float32, without a contract.

    Args:
      examples: [n, *input_shape] array.
      labels: [n] integer class ids; each distinct value is one class, in sorted order.
      class_names: a name for each distinct label, in that order; default str(label).

    Returns:
      Source, examples [classes, most examples of a class, *input_shape], zero-padded.

    Raises:
      ValueError: one line: lengths or names that do not match, non-integer labels, pixels
        outside 0-255 or scaled to [0, 1], fewer than 2 classes.
    """
    examples, labels = np.asarray(examples), np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(examples):
        raise ValueError(f"from_arrays: labels must be [n] for examples [n, ...]; got labels "
                         f"{list(labels.shape)}, examples {list(examples.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"from_arrays: labels must be integer class ids, got {labels.dtype}")
    ids, class_of = np.unique(labels, return_inverse=True)
    if len(ids) < 2:
        raise ValueError(f"from_arrays: {len(ids)} class(es); an episode needs 2 or more")
    names = tuple(str(i) for i in ids) if class_names is None else tuple(class_names)
    if len(names) != len(ids):
        raise ValueError(f"from_arrays: {len(names)} class names for {len(ids)} classes")
    contract = None
    if examples.ndim == 4 and examples.shape[-1] in (1, 3):
        high = float(examples.max()) if examples.size else 0.0
        if float(examples.min()) < 0 or high > 255:
            raise ValueError("from_arrays: images must be pixels in [0, 255]; got values in "
                             f"[{float(examples.min()):g}, {high:g}]")
        if examples.dtype != np.uint8 and 0 < high <= 1:
            raise ValueError("from_arrays: the images look scaled to [0, 1] (largest value "
                             f"{high:g}): pass pixels 0-255 (multiply by 255)")
        examples = np.round(examples).astype(np.uint8)
        contract = ImageContract(*examples.shape[1:], source="arrays of uint8 pixels, "
                                 "model size")
    else:
        examples = examples.astype(np.float32)
    counts = np.bincount(class_of, minlength=len(ids)).astype(np.int32)
    rows = np.zeros((len(ids), counts.max(), *examples.shape[1:]), examples.dtype)
    order = np.argsort(class_of, kind="stable")
    for row, members in enumerate(np.split(order, np.cumsum(counts)[:-1])):
        rows[row, :len(members)] = examples[members]
    return Source(rows, counts, ids.astype(np.int64), names, contract)
