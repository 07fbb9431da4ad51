"""Class-indexed in-memory sources: Omniglot (TFDS), synthetic data; image folders: folders.py.

A source holds every example of every class of one split, so the sampler can draw an
episode with a couple of gathers. Splits are made over *classes*, never examples.
"""

import json
import os
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from tf_meta.data.images import ImageContract, to_model_pixels

OMNIGLOT_EXAMPLES_PER_CLASS = 20
SPLIT_SCHEMES = ("vinyals", "lake")
SPLITS = ("train", "val", "test")


class Source(NamedTuple):
    """The examples of one split, indexed by class.

    Fields:
      examples: [classes, max_examples, *input_shape], uint8 pixels for image sources.
        Class c holds `counts[c]` real examples; the rest of its row is zero padding.
      counts: [classes] int32, examples of each class.
      labels: [classes] int64, the dataset's own id of the class an entry came from
        (the TFDS label for Omniglot); rotated copies of a character share it, which is
        what makes "no character in two splits" checkable.
      names: tuple of `classes` readable names, e.g. "Hebrew_0/rot090".
      image_contract: for image sources, the ImageContract that made `examples` from the
        images as the dataset provides them (an export serves those images through it);
        None for feature vectors.
    """

    examples: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    names: tuple
    image_contract: Optional[ImageContract] = None

    @property
    def num_classes(self):
        return len(self.counts)

    @property
    def input_shape(self):
        return tuple(self.examples.shape[2:])

    def labelled_examples(self):
        """Every real example with its class index: ([n, *input_shape], [n] int32), class-major."""
        images = np.concatenate([self.examples[c, :n] for c, n in enumerate(self.counts)])
        labels = np.repeat(np.arange(self.num_classes, dtype=np.int32), self.counts)
        return images, labels


def omniglot(split_scheme="vinyals", image_size=28, data_dir=None, download=True):
    """Omniglot from TFDS, both TFDS splits pooled (1,623 characters), split by class.

    Images are resized to `image_size`² grayscale with strokes bright on a dark
    background (uint8; learners rescale to [0, 1] in-graph): `omniglot_contract`.

    Split schemes:
      vinyals: the Matching-Nets / ProtoNet split (1,028 / 172 / 423 characters), every
        character in 4 rotations (0/90/180/270° counter-clockwise) as separate classes,
        in all three splits, as in Snell et al.'s reference loader.
      lake: the 964 background characters (in 4 rotations) for training and the 659
        evaluation characters, unrotated, for testing; no validation split.

    Args:
      split_scheme: one of SPLIT_SCHEMES.
      image_size: side of the square images.
      data_dir: TFDS data dir; None uses TFDS's default (`TFDS_DATA_DIR` or
        ~/tensorflow_datasets).
      download: let TFDS download and prepare the dataset when it is missing.

    Returns:
      dict split name -> Source, examples [classes, 20, image_size, image_size, 1].

    Raises:
      ValueError: unknown scheme, or the dataset is neither prepared nor downloadable.
    """
    if split_scheme not in SPLIT_SCHEMES:
        raise ValueError(f"unknown split scheme {split_scheme!r}; choose from {SPLIT_SCHEMES}")
    import tensorflow_datasets as tfds  # deferred: only Omniglot users pay for the import

    try:
        dataset, info = tfds.load("omniglot", split="train+test", data_dir=data_dir,
                                  download=download, with_info=True)
    except Exception as e:  # TFDS raises assorted types for "not prepared" and network errors
        where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
        raise ValueError(f"cannot load TFDS omniglot from {where} ({type(e).__name__}); set "
                         "TFDS_DATA_DIR to a folder with omniglot/3.0.0 prepared, or allow "
                         "the download") from None
    contract = omniglot_contract(image_size)
    images = _to_characters(dataset, contract)
    label_names = info.features["label"].names
    ids = _split_ids(split_scheme)
    splits = {}
    for name, chars in ids.items():
        rotate = split_scheme == "vinyals" or name == "train"
        splits[name] = _rotated_source(images, chars, label_names, rotate, contract)
    return splits


def omniglot_contract(image_size=28):
    """The ImageContract of the Omniglot source: TFDS's images, inverted and shrunk."""
    return ImageContract(image_size, image_size, 1, invert=True,
                         source="TFDS omniglot: 105x105x3 uint8, dark strokes on white")


def _to_characters(dataset, contract):
    """TFDS records (105x105x3 black on white) -> [1623, 20, s, s, 1] uint8 white on black.

    Images are shrunk inside the tf.data pipeline, so the full-size images are never all
    in memory at once.
    """
    def shrink(example):
        small = to_model_pixels(example["image"][None], contract)[0]
        return tf.cast(small, tf.uint8), example["label"]

    images, labels = [], []
    for small, label in dataset.map(shrink, num_parallel_calls=tf.data.AUTOTUNE).batch(2048):
        images.append(small.numpy())
        labels.append(label.numpy())
    order = np.argsort(np.concatenate(labels), kind="stable")
    images = np.concatenate(images)[order]
    return images.reshape(-1, OMNIGLOT_EXAMPLES_PER_CLASS, *contract.input_shape)


def _split_ids(split_scheme):
    """dict split -> sorted TFDS label ids of its characters."""
    if split_scheme == "lake":
        return {"train": np.arange(964), "test": np.arange(964, 1623)}
    path = os.path.join(os.path.dirname(__file__), "omniglot_vinyals_split.json")
    with open(path) as f:
        return {name: np.asarray(ids) for name, ids in json.load(f).items()}


def _rotated_source(images, chars, label_names, rotate, contract):
    """Source of `chars`; with `rotate`, each character as 4 classes (k·90° CCW)."""
    ks = range(4) if rotate else range(1)
    # Axes (2, 3) are H, W of [chars, examples, H, W, C]; np.rot90 turns counter-clockwise.
    examples = np.stack([np.rot90(images[chars], k, axes=(2, 3)) for k in ks], axis=1)
    examples = examples.reshape(-1, *images.shape[1:])
    labels = np.repeat(chars, len(ks)).astype(np.int64)
    names = tuple(f"{label_names[c]}/rot{90 * k:03d}" for c in chars for k in ks)
    counts = np.full(len(labels), images.shape[1], np.int32)
    return Source(np.ascontiguousarray(examples), counts, labels, names, contract)


def split_classes(source, fractions, seed):
    """Disjoint train/val/test Sources from one Source, by `split_ids`."""
    return {name: _subset(source, ids)
            for name, ids in split_ids(source.num_classes, fractions, seed).items()}


def check_fractions(fractions, name="split fractions"):
    """Raises ValueError, naming `name`, unless `fractions` is (train, val, test): each >= 0,
    train and test above 0 (val 0: no validation split), summing to 1."""
    if (len(fractions) != 3 or min(fractions) < 0 or not fractions[0] > 0
            or not fractions[2] > 0 or abs(sum(fractions) - 1) > 1e-6):
        raise ValueError(f"{name}: give three fractions, train,val,test, each >= 0, train and "
                         "test above 0, summing to 1 (e.g. 0.7,0.15,0.15; 0.8,0,0.2 for no "
                         "validation)")


def split_ids(num_classes, fractions, seed):
    """dict split -> sorted class ids: a seeded shuffle of `num_classes` classes, cut in
    `fractions` (train, val, test).

    Train's and val's shares are rounded (numpy's, half to even), test takes the rest. Then
    a split of positive fraction with fewer than 2 classes (an episode has at least 2 ways)
    takes them from the largest split: 10 classes at (0.7, 0.15, 0.15) give 6/2/2 (rounded:
    7/2/1). A split of fraction 0 is left out.

    Raises:
      ValueError: bad fractions (`check_fractions`), or fewer than 2 classes for each split.
    """
    check_fractions(fractions)
    names = [n for n, f in zip(SPLITS, fractions) if f > 0]
    if num_classes < 2 * len(names):
        named = ", ".join(names[:-1]) + " and " + names[-1]
        raise ValueError(f"{num_classes} class(es) are too few to split into {named} classes, "
                         f"2 or more each, by the fractions {tuple(fractions)}: add classes"
                         + (", or give validation none (--split_fractions=0.5,0,0.5)"
                            if "val" in names and num_classes >= 4 else ""))
    sizes = np.round(np.asarray(fractions[:2]) * num_classes).astype(int).tolist()
    sizes.append(num_classes - sum(sizes))
    for i, fraction in enumerate(fractions):
        while fraction > 0 and sizes[i] < 2:
            sizes[int(np.argmax(sizes))] -= 1
            sizes[i] += 1
    order = np.random.default_rng(seed).permutation(num_classes)
    parts = np.split(order, np.cumsum(sizes)[:-1])
    return {name: np.sort(ids) for name, ids in zip(SPLITS, parts) if len(ids)}


def concatenate(*sources):
    """One Source holding the classes of `sources`, in order (e.g. train+val).

    Rows are zero-padded to the largest example count; `counts` keeps each class's own.
    """
    width = max(s.examples.shape[1] for s in sources)
    examples = [np.pad(s.examples, [(0, 0), (0, width - s.examples.shape[1])]
                       + [(0, 0)] * (s.examples.ndim - 2)) for s in sources]
    contracts = {s.image_contract for s in sources}
    if len(contracts) > 1:
        raise ValueError(f"cannot concatenate sources of different image contracts: {contracts}")
    return Source(np.concatenate(examples), np.concatenate([s.counts for s in sources]),
                  np.concatenate([s.labels for s in sources]),
                  tuple(name for s in sources for name in s.names), contracts.pop())


def _subset(source, ids):
    return Source(source.examples[ids], source.counts[ids], source.labels[ids],
                  tuple(source.names[i] for i in ids), source.image_contract)


def synthetic(num_classes=30, examples_per_class=20, input_shape=(8,), noise=0.5, seed=0):
    """Gaussian clusters, one per class: a learnable source for fast tests.

    Vector shapes give float32 examples around unit-variance class means; image shapes
    ([H, W, C]) give uint8 pixels around random class templates.

    Returns:
      Source, examples [num_classes, examples_per_class, *input_shape].
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_classes, 1, *input_shape))
    examples = means + noise * rng.normal(size=(num_classes, examples_per_class, *input_shape))
    contract = None
    if len(input_shape) == 3:
        examples = np.clip(128 + 60 * examples, 0, 255).astype(np.uint8)
        contract = ImageContract(*input_shape, source="synthetic uint8 pixels, model size")
    else:
        examples = examples.astype(np.float32)
    return Source(examples, np.full(num_classes, examples_per_class, np.int32),
                  np.arange(num_classes, dtype=np.int64),
                  tuple(f"class_{c}" for c in range(num_classes)), contract)


def synthetic_splits(num_classes=60, seed=0, **kwargs):
    """Disjoint train/val/test synthetic Sources (60/20/20% of `num_classes`)."""
    return split_classes(synthetic(num_classes, seed=seed, **kwargs), (0.6, 0.2, 0.2), seed)
