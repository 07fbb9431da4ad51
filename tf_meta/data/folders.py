"""Image folders as Sources: one sub-folder of images per class, split by class.

A folder tree is either `train/`, `test/` (and optionally `val/`) folders of class folders,
or class folders alone, split by a seeded shuffle of the classes (`sources.split_ids`). Its
image size and channels, unless given, come from its images (`image_settings`). The images
are decoded in parallel (`image_files.read_many`), from a local folder or from any
TensorFlow filesystem (`gs://...`, `ram://...`).
"""

import os
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from tf_meta.data import image_files
from tf_meta.data.images import ImageContract, convert_channels, to_model_pixels
from tf_meta.data.sources import SPLITS, Source, split_ids

DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
# The sides a folder's images get unless image_size is given: at most the largest the papers
# train their Conv-4 networks on (mini-ImageNet's 84; Omniglot's 105 becomes 28), at least
# the smallest every network here takes (Omniglot's 28; RelationNet's needs 27).
DEFAULT_SIZES = (28, 84)


class ClassFolder(NamedTuple):
    """One class: its folder's name, its label (position among its siblings) and files."""

    name: str
    label: int
    files: tuple


class FolderLayout(NamedTuple):
    """A folder tree's classes by split, as listed (nothing decoded).

    Fields:
      path: the tree's root.
      splits: dict split name -> tuple of ClassFolder, in SPLITS order ("val" may be absent).
      fractions: the (train, val, test) fractions its classes were split by, or None when
        its train/, val/ and test/ folders are the splits.
    """

    path: str
    splits: dict
    fractions: Optional[tuple]

    def classes(self):
        """dict split -> its number of classes."""
        return {split: len(classes) for split, classes in self.splits.items()}

    def fewest_images(self):
        """dict split -> the images of its smallest class."""
        return {split: min(len(c.files) for c in classes)
                for split, classes in self.splits.items()}

    def files(self):
        """Every image file, split by split, class by class."""
        return _files(self.splits)


def class_folders(path):
    """[ClassFolder] of a folder of class folders, sorted by name; hidden names ignored.

    Raises:
      ValueError, one line naming the path: missing folder, no class folders, a class
        folder without images.
    """
    if not image_files.isdir(path):
        raise ValueError(f"image folder {path!r} does not exist")
    names = [n for n in image_files.listing(path) if image_files.isdir(os.path.join(path, n))]
    if not names:
        raise ValueError(f"image folder {path!r} has no class sub-folders")
    found = []
    for label, name in enumerate(names):
        folder = os.path.join(path, name)
        files = tuple(os.path.join(folder, f) for f in image_files.listing(folder)
                      if image_files.is_image_name(f))
        if not files:
            raise ValueError(f"class folder {folder!r} has no images")
        found.append(ClassFolder(name, label, files))
    return found


def has_split_folders(path):
    """Whether `path` holds train/ and test/ folders, which are then its splits."""
    return all(image_files.isdir(os.path.join(path, n)) for n in ("train", "test"))


def folder_layout(path, fractions=None, seed=0):
    """The FolderLayout of the tree at `path`.

    If `path` has train/ and test/ folders (and optionally val/), each holding class
    folders, those are the splits. Otherwise `path` holds the class folders, split by
    `split_ids(classes, fractions, seed)`: by default 70/15/15%, with 2 classes or more in
    each split.

    Raises:
      ValueError: a bad folder (`class_folders`), fractions given for a tree of split
        folders, or a split of fewer than 2 classes: an episode has at least 2 ways.
    """
    if has_split_folders(path):
        if fractions is not None:
            raise ValueError(f"split fractions {tuple(fractions)} do not apply to {path!r}: its "
                             "train/ and test/ folders are the splits")
        splits = {n: tuple(class_folders(os.path.join(path, n))) for n in SPLITS
                  if image_files.isdir(os.path.join(path, n))}
        for split, classes in splits.items():
            if len(classes) < 2:
                raise ValueError(f"{os.path.join(path, split)!r} has {len(classes)} class "
                                 "folder: episodes need 2 classes or more")
        return FolderLayout(path, splits, None)
    classes = class_folders(path)
    fractions = tuple(fractions or DEFAULT_FRACTIONS)
    ids = split_ids(len(classes), fractions, seed)
    return FolderLayout(path, {split: tuple(classes[i] for i in found)
                               for split, found in ids.items()}, fractions)


def _size_and_gray(pixels):
    """[H, W, C] pixels -> [3] int32: H, W, and 1 if grayscale (C <= 2, or R = G = B)."""
    rgb = convert_channels(pixels, 3)
    gray = tf.reduce_all(tf.equal(rgb[..., :1], rgb[..., 1:]))
    return tf.stack([tf.shape(pixels)[0], tf.shape(pixels)[1], tf.cast(gray, tf.int32)])


def image_settings(layout, image_size=None, channels=None, max_pixels=image_files.MAX_PIXELS):
    """(image_size, channels) of a folder tree: the given ones, the rest from its images.

    Unset ones are read from the images, each decoded once (`image_files.read_many`):
      image_size: the side of the images when they all share one square size, within
        DEFAULT_SIZES (28 to 84: larger ones are shrunk to 84, as the papers shrink theirs;
        smaller ones enlarged to 28). Images of several sizes, or not square, are refused:
        the side to resize them to is the user's choice.
      channels: 1 when every image is grayscale (one channel, gray and alpha, or RGB with
        R = G = B at every pixel, as TFDS stores Omniglot), else 3.

    Raises:
      ValueError: one line: the images' sizes differ or are not square (naming two files),
        or an image cannot be read.
    """
    if image_size and channels:
        return image_size, channels
    files = layout.files()
    found = image_files.read_many(files, _size_and_gray, max_pixels)  # [n, 3]
    if not image_size:
        sizes, first = np.unique(found[:, :2], axis=0, return_index=True)
        (height, width), example = sizes[0], files[first[0]]
        if len(sizes) > 1:
            other = files[first[1]]
            raise ValueError(
                f"the images of {layout.path!r} have {len(sizes)} sizes ({example!r} is "
                f"{width}x{height}, {other!r} {sizes[1][1]}x{sizes[1][0]}): set image_size "
                "(--image_size), the side of the square they are resized to, e.g. 84")
        if height != width:
            raise ValueError(f"the images of {layout.path!r} are {width}x{height}, not square: "
                             "set image_size (--image_size), the side of the square they are "
                             "resized to")
        image_size = int(np.clip(height, *DEFAULT_SIZES))
    return image_size, channels or (1 if found[:, 2].all() else 3)


def folder(path, image_size=28, channels=1, invert=False, max_pixels=image_files.MAX_PIXELS):
    """A directory with one sub-folder of images per class, as a Source.

    Files and folders whose names start with "." (.DS_Store, macOS's ._x.png,
    .ipynb_checkpoints/) are ignored. Every other file named like an image
    (image_files.IMAGE_EXTENSIONS, any case) must be a PNG, JPEG, GIF or BMP regular file, or a
    symbolic link to one: a directory, FIFO, socket, broken or looping link of such a
    name is refused, not skipped, so no image is silently left out. A local path is checked
    with os.stat before it is opened; a path on another TensorFlow filesystem (`scheme://`)
    is listed and read through tf.io.gfile. The size an image declares in its header is
    checked against `max_pixels` before it is decoded. A GIF gives its first frame. The
    images are decoded in parallel (`image_files.read_many`).

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
    contract = _contract(image_size, channels, invert)
    return _read_sources({"": class_folders(path)}, contract, max_pixels)[""]


def folder_splits(path, fractions=None, seed=0, image_size=None, channels=None, invert=False,
                  max_pixels=image_files.MAX_PIXELS):
    """Train/val/test Sources of the folder tree at `path` (`folder_layout`).

    Args:
      path, fractions, seed: as `folder_layout`.
      image_size, channels: as `folder`; None reads them from the images (`image_settings`).
      invert, max_pixels: as `folder`.

    Returns:
      dict split name -> Source, every image read in one parallel stream.
    """
    layout = folder_layout(path, fractions, seed)
    image_size, channels = image_settings(layout, image_size, channels, max_pixels)
    return _read_sources(layout.splits, _contract(image_size, channels, invert), max_pixels)


def _contract(image_size, channels, invert):
    return ImageContract(image_size, image_size, channels, invert, source=(
        "image files (PNG, JPEG, GIF, BMP) of any size" + (", dark on light" if invert else "")))


def _read_sources(splits, contract, max_pixels):
    """dict split -> Source of its ClassFolders, their images read in one parallel stream."""
    pixels = image_files.read_many(
        _files(splits), lambda image: tf.cast(to_model_pixels(image[None], contract)[0], tf.uint8),
        max_pixels)
    sources, start = {}, 0
    for split, classes in splits.items():
        counts = np.array([len(c.files) for c in classes], np.int32)
        examples = np.zeros((len(classes), counts.max(), *contract.input_shape), np.uint8)
        for row, count in enumerate(counts):
            examples[row, :count] = pixels[start:start + count]
            start += count
        sources[split] = Source(examples, counts, np.array([c.label for c in classes], np.int64),
                                tuple(c.name for c in classes), contract)
    return sources


def _files(splits):
    """Every image file of `splits` (split -> ClassFolders), split by split, class by class."""
    return [file for classes in splits.values() for c in classes for file in c.files]
