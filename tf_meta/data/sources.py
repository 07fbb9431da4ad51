"""Class-indexed in-memory sources: Omniglot (TFDS), user image folders, synthetic data.

A source holds every example of every class of one split, so the sampler can draw an
episode with a couple of gathers. Splits are made over *classes*, never examples.
"""

import json
import os
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from tf_meta.data import image_files
from tf_meta.data.images import ImageContract, to_model_pixels

OMNIGLOT_EXAMPLES_PER_CLASS = 20
SPLIT_SCHEMES = ("vinyals", "lake")


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


def folder(path, image_size=28, channels=1, invert=False, max_pixels=image_files.MAX_PIXELS):
    """A directory with one sub-folder of images per class, as a Source.

    Files and folders whose names start with "." (.DS_Store, macOS's ._x.png,
    .ipynb_checkpoints/) are ignored. Every other file named like an image
    (image_files.IMAGE_EXTENSIONS, any case) must be a PNG, JPEG, GIF or BMP regular file, or a
    symbolic link to one: a directory, FIFO, socket, broken or looping link of such a
    name is refused, not skipped, so no image is silently left out. This check uses
    os.stat, so folders are local paths. The size an image declares in its header is
    checked against `max_pixels` before it is decoded. A GIF gives its first frame.

    Args:
      path: directory; each sub-folder is a class named after it (sorted order).
      image_size: images are resized (area) to image_size x image_size.
      channels: 1 (grayscale) or 3 (RGB).
      invert: store 255 - pixel, e.g. to make dark-on-light drawings bright-on-dark
        like the Omniglot source.
      The three make the source's ImageContract, which `images.to_model_pixels` applies
      to each decoded file, as an export applies it to served images.
      max_pixels: the most pixels (width x height, times the frames of a GIF, all of
        which TF decodes) an image may declare; default image_files.MAX_PIXELS, 4096x4096.

    Returns:
      Source, examples [classes, max images in a class, image_size, image_size, channels].

    Raises:
      ValueError, one line naming the path: missing or empty directory, a class without
        images, an image that is not a regular file, too large or unreadable.
    """
    if not os.path.isdir(path):
        raise ValueError(f"image folder {path!r} does not exist")
    contract = ImageContract(image_size, image_size, channels, invert, source=(
        "image files (PNG, JPEG, GIF, BMP) of any size" + (", dark on light" if invert else "")))
    classes = [d for d in image_files.listing(path) if os.path.isdir(os.path.join(path, d))]
    if not classes:
        raise ValueError(f"image folder {path!r} has no class sub-folders")
    per_class = []
    for name in classes:
        files = [f for f in image_files.listing(os.path.join(path, name))
                 if image_files.is_image_name(f)]
        if not files:
            raise ValueError(f"class folder {os.path.join(path, name)!r} has no images")
        per_class.append([_read_image(os.path.join(path, name, f), contract, max_pixels)
                          for f in files])
    counts = np.array([len(c) for c in per_class], np.int32)
    examples = np.zeros((len(classes), counts.max(), image_size, image_size, channels), np.uint8)
    for c, images in enumerate(per_class):
        examples[c, :len(images)] = images
    return Source(examples, counts, np.arange(len(classes), dtype=np.int64), tuple(classes),
                  contract)


def _read_image(file, contract, max_pixels):
    """[*contract.input_shape] uint8 model pixels of one image file."""
    image = image_files.read(file, max_pixels)
    return tf.cast(to_model_pixels(image[None], contract)[0], tf.uint8).numpy()


def folder_splits(path, fractions=(0.7, 0.15, 0.15), seed=0, **image_args):
    """Train/val/test Sources from a folder tree.

    If `path` has `train/` and `test/` sub-folders (and optionally `val/`), each holding
    one folder per class, those are the splits. Otherwise `path` holds the class folders
    and the classes are split by a seeded shuffle in the given fractions.

    Returns:
      dict split name -> Source.
    """
    if os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test")):
        names = [n for n in ("train", "val", "test") if os.path.isdir(os.path.join(path, n))]
        return {n: folder(os.path.join(path, n), **image_args) for n in names}
    return split_classes(folder(path, **image_args), fractions, seed)


def split_classes(source, fractions, seed):
    """Disjoint train/val/test Sources from one Source, by a seeded class shuffle.

    Raises:
      ValueError: too few classes for a train and a test split (val may come out empty).
    """
    order = np.random.default_rng(seed).permutation(source.num_classes)
    bounds = np.cumsum(np.round(np.asarray(fractions) * source.num_classes).astype(int))[:-1]
    splits = {name: _subset(source, np.sort(ids))
              for name, ids in zip(("train", "val", "test"), np.split(order, bounds))
              if len(ids)}
    if "train" not in splits or "test" not in splits:
        raise ValueError(f"{source.num_classes} class(es) are too few to split into train and "
                         f"test classes by the fractions {tuple(fractions)}")
    return splits


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
