"""Sources: the real Omniglot (TFDS) with its class splits, image folders, synthetic data."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT
from tf_meta import data
from tf_meta.data.sources import split_ids

SPLITS_DIR = ROOT.parent / "shared" / "data" / "omniglot" / "splits" / "vinyals"


def test_omniglot_shapes_and_pixels(omniglot_splits):
    sizes = {name: s.examples.shape for name, s in omniglot_splits.items()}
    assert sizes == {"train": (4112, 20, 28, 28, 1), "val": (688, 20, 28, 28, 1),
                     "test": (1692, 20, 28, 28, 1)}
    test = omniglot_splits["test"].examples
    assert test.dtype == np.uint8
    # Strokes bright on a dark background: most pixels are dark, strokes reach full white.
    assert np.median(test[:50]) == 0 and test.max() == 255
    assert 0.03 < (test[:50] > 127).mean() < 0.3


def test_vinyals_splits_are_disjoint_by_character_including_rotations(omniglot_splits):
    chars = {name: set(s.labels.tolist()) for name, s in omniglot_splits.items()}
    assert (len(chars["train"]), len(chars["val"]), len(chars["test"])) == (1028, 172, 423)
    assert not chars["train"] & chars["val"] and not chars["train"] & chars["test"]
    assert not chars["val"] & chars["test"]
    assert chars["train"] | chars["val"] | chars["test"] == set(range(1623))
    for source in omniglot_splits.values():  # every character appears in exactly 4 rotations
        assert np.all(np.bincount(source.labels)[source.labels] == 4)


@pytest.mark.skipif(not SPLITS_DIR.is_dir() and not os.environ.get("CI"),
                    reason="the published split files are not beside this checkout")
def test_vinyals_splits_match_the_published_split_files(omniglot_splits):
    """Also trainval.txt, the classes of Snell et al.'s final models (`--trainval`)."""
    trainval = data.concatenate(omniglot_splits["train"], omniglot_splits["val"])
    for name, source in {**omniglot_splits, "trainval": trainval}.items():
        published = set()
        for line in (SPLITS_DIR / f"{name}.txt").read_text().split():
            alphabet, character, rotation = line.split("/")
            published.add(f"{alphabet}_{int(character[len('character'):]) - 1}/{rotation}")
        assert set(source.names) == published


def test_rotations_are_counter_clockwise_quarter_turns(omniglot_splits):
    source = omniglot_splits["train"]
    index = {name: i for i, name in enumerate(source.names)}
    base = source.names[0].split("/")[0]
    upright = source.examples[index[f"{base}/rot000"]]
    for k in (1, 2, 3):
        rotated = source.examples[index[f"{base}/rot{90 * k:03d}"]]
        np.testing.assert_array_equal(rotated, np.rot90(upright, k, axes=(1, 2)))
        assert not np.array_equal(rotated, upright)


def test_lake_split_background_for_training_evaluation_for_testing(omniglot_splits):
    splits = data.omniglot("lake", download=False)  # the fixture made sure the data is there
    assert set(splits) == {"train", "test"}
    assert set(splits["train"].labels.tolist()) == set(range(964))
    assert splits["train"].num_classes == 964 * 4
    assert set(splits["test"].labels.tolist()) == set(range(964, 1623))
    assert splits["test"].num_classes == 659  # evaluation characters, unrotated


def test_missing_dataset_is_a_one_line_error_naming_the_setting(tmp_path):
    with pytest.raises(ValueError, match="set TFDS_DATA_DIR") as info:
        data.omniglot(data_dir=str(tmp_path), download=False)
    assert "\n" not in str(info.value)


def write_png(path, pixels):
    tf.io.write_file(str(path), tf.io.encode_png(tf.constant(pixels, tf.uint8)))


def make_folder(root, counts, size=12):
    rng = np.random.default_rng(0)
    for c, n in enumerate(counts):
        os.makedirs(root / f"class{c}")
        for i in range(n):
            write_png(root / f"class{c}" / f"{i}.png", rng.integers(0, 256, (size, size, 1)))


def test_folder_source_reads_resizes_pads_and_counts(tmp_path):
    make_folder(tmp_path, [4, 6, 5])
    (tmp_path / "class1" / "notes.txt").write_text("not an image")
    source = data.folder(str(tmp_path), image_size=8)
    assert source.names == ("class0", "class1", "class2")
    assert source.examples.shape == (3, 6, 8, 8, 1) and source.examples.dtype == np.uint8
    assert source.counts.tolist() == [4, 6, 5]
    assert not source.examples[0, 4:].any()  # padding beyond a class's count
    inverted = data.folder(str(tmp_path), image_size=8, invert=True)
    np.testing.assert_array_equal(inverted.examples[1], 255 - source.examples[1])


def test_folder_source_feeds_the_same_sampler(tmp_path):
    make_folder(tmp_path, [5] * 6)
    source = data.folder(str(tmp_path), image_size=8)
    episode = next(iter(data.make_episode_dataset(source, 3, 2, 3, 2, seed=0)))
    assert episode.support_x.shape == (2, 6, 8, 8, 1) and episode.query_x.shape == (2, 9, 8, 8, 1)


@pytest.mark.parametrize("problem,message", [
    ("missing", "does not exist"), ("no_classes", "no class sub-folders"),
    ("empty_class", "has no images"), ("corrupt", "cannot read image"),
])
def test_bad_folders_are_named_errors(tmp_path, problem, message):
    root = tmp_path / "data"
    if problem != "missing":
        os.makedirs(root)
    if problem in ("empty_class", "corrupt"):
        make_folder(root, [3, 3])
        os.makedirs(root / "class9")
        if problem == "corrupt":
            (root / "class9" / "0.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=message):
        data.folder(str(root))


def test_folder_splits_use_train_test_subfolders_or_split_classes(tmp_path):
    make_folder(tmp_path / "train", [4] * 5)
    make_folder(tmp_path / "test", [4] * 3)
    splits = data.folder_splits(str(tmp_path), image_size=8)
    assert {k: v.num_classes for k, v in splits.items()} == {"train": 5, "test": 3}
    flat = tmp_path / "flat"
    make_folder(flat, [4] * 20)
    splits = data.folder_splits(str(flat), image_size=8, seed=1)
    names = [set(s.names) for s in splits.values()]
    assert [len(n) for n in names] == [14, 3, 3]
    assert set.union(*names) == {f"class{c}" for c in range(20)}
    assert sum(len(n) for n in names) == 20  # disjoint


def test_concatenate_keeps_each_class_and_pads_to_the_widest():
    a, b = data.synthetic(3, 4, (6, 6, 1), seed=1), data.synthetic(2, 7, (6, 6, 1), seed=2)
    both = data.concatenate(a, b)
    assert both.examples.shape == (5, 7, 6, 6, 1) and list(both.counts) == [4, 4, 4, 7, 7]
    np.testing.assert_array_equal(both.examples[:3, :4], a.examples)
    np.testing.assert_array_equal(both.examples[3:], b.examples)
    assert not both.examples[:3, 4:].any()  # padding, never sampled: counts say 4
    assert both.names == a.names + b.names and list(both.labels) == [0, 1, 2, 0, 1]


def test_synthetic_splits_are_disjoint_and_typed():
    splits = data.synthetic_splits(num_classes=50, input_shape=(8,))
    assert sum(s.num_classes for s in splits.values()) == 50
    assert not set(splits["train"].labels) & set(splits["test"].labels)
    assert splits["train"].examples.dtype == np.float32
    images = data.synthetic(5, 4, (6, 6, 1))
    assert images.examples.dtype == np.uint8 and images.input_shape == (6, 6, 1)


@pytest.mark.parametrize("classes,fractions,sizes", [
    (10, (0.7, 0.15, 0.15), [6, 2, 2]),  # rounded 7/2/1: the test split takes one from train
    (20, (0.7, 0.15, 0.15), [14, 3, 3]),  # as before
    (6, (0.8, 0, 0.2), [4, 2]),  # no validation split
])
def test_split_fractions_give_every_split_two_classes_or_more(classes, fractions, sizes):
    splits = split_ids(classes, fractions, seed=0)
    assert [len(ids) for ids in splits.values()] == sizes
    assert sorted(np.concatenate(list(splits.values()))) == list(range(classes))


def test_too_few_classes_for_two_in_each_split_is_one_line():
    with pytest.raises(ValueError, match=r"^5 class\(es\) are too few to split into train, val "
                       r"and test classes, 2 or more each, by the fractions \(0.7, 0.15, 0.15\): "
                       r"add classes, or give validation none \(--split_fractions=0.5,0,0.5\)$"):
        split_ids(5, (0.7, 0.15, 0.15), seed=0)
    # Fewer than 4 classes cannot give train and test 2 each either: no such advice then.
    with pytest.raises(ValueError, match=r"^3 class\(es\) are too few to split into train, val "
                       r"and test classes, 2 or more each, by the fractions \(0.7, 0.15, 0.15\): "
                       r"add classes$"):
        split_ids(3, (0.7, 0.15, 0.15), seed=0)
    with pytest.raises(ValueError, match=r"^3 class\(es\) are too few to split into train and "
                       r"test classes, 2 or more each, by the fractions \(0.5, 0.0, 0.5\): "
                       r"add classes$"):
        split_ids(3, (0.5, 0.0, 0.5), seed=0)


def test_folder_splits_read_size_and_channels_from_images_on_any_tensorflow_filesystem(tmp_path):
    """ram:// stands for gs:// and the other filesystems TensorFlow reads (before: 'image
    folder ... does not exist'): listed and read through tf.io.gfile, as a local copy."""
    rng = np.random.default_rng(0)
    for root in (str(tmp_path), "ram://tf_meta_sources/images"):
        for c in range(6):
            for i in range(2):
                pixels = rng.integers(0, 256, (30, 30, 3)) if root == str(tmp_path) else (
                    tf.io.decode_png(tf.io.read_file(f"{tmp_path}/c{c}/{i}.png")))
                tf.io.write_file(f"{root}/c{c}/{i}.png", tf.io.encode_png(
                    tf.constant(pixels, tf.uint8)))
    local = data.folder_splits(str(tmp_path))
    remote = data.folder_splits("ram://tf_meta_sources/images")
    assert local["train"].input_shape == (30, 30, 3)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(remote[split].examples, local[split].examples)
        assert remote[split].names == local[split].names
    tf.io.gfile.makedirs("ram://tf_meta_sources/images/c0/x.png")
    with pytest.raises(ValueError, match="x.png': it is a directory, not a regular file"):
        data.folder("ram://tf_meta_sources/images")
    with pytest.raises(ValueError, match="image folder 'ram://tf_meta_sources/no' does not"):
        data.folder("ram://tf_meta_sources/no")


def write_mixed_formats(root, per_class):
    """Two classes of `per_class` files each, cycling through PNG (gray, RGBA), JPEG, GIF
    (two frames), BMP (RGB, and 8-bit palette: the one `read` must read itself)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    kinds = [("png", "L"), ("png", "RGBA"), ("jpg", "RGB"), ("gif", "P"), ("bmp", "RGB"),
             ("bmp", "P")]
    for c in range(2):
        os.makedirs(root / f"c{c}")
        for i in range(per_class):
            ext, mode = kinds[i % len(kinds)]
            image = Image.fromarray(rng.integers(0, 256, (9 + i % 5, 12, 3), np.uint8))
            frames = [image.convert(mode), image.transpose(0).convert(mode)]
            frames[0].save(root / f"c{c}" / f"{i}.{ext}",
                           **(dict(save_all=True, append_images=frames[1:]) if ext == "gif"
                              else {}))


@pytest.mark.parametrize("channels", [1, 3])
def test_many_images_are_decoded_in_parallel_as_read_reads_them(tmp_path, monkeypatch, channels):
    """Before, every file went through image_files.read, one at a time; now only the files
    the tf.data graph leaves to it (palette BMPs, whose palette it applies)."""
    from tf_meta.data import image_files
    write_mixed_formats(tmp_path, 40)  # 80 files: from PARALLEL_FROM (50) on, in parallel
    read, calls = image_files.read, []
    monkeypatch.setattr(image_files, "read", lambda *a: calls.append(a[0]) or read(*a))
    parallel = data.folder(str(tmp_path), image_size=10, channels=channels)
    assert calls and all(file.endswith(".bmp") for file in calls)
    assert len(calls) < sum(parallel.counts) / 4
    monkeypatch.setattr(image_files, "PARALLEL_FROM", 10**9)  # every file through `read`
    np.testing.assert_array_equal(
        parallel.examples, data.folder(str(tmp_path), image_size=10, channels=channels).examples)


@pytest.mark.parametrize("bad,message", [
    (b"not an image", "Unknown image file format. One of PNG, JPEG, GIF, BMP required."),
    (b"\x89PNG\r\n\x1a\n", "truncated header"),
    (tf.io.encode_png(tf.zeros([3, 3, 1], tf.uint8)).numpy()[:-20], "cannot read image"),
], ids=["junk", "truncated header", "truncated data"])
def test_a_bad_file_among_many_is_named_as_read_names_it(tmp_path, monkeypatch, bad, message):
    from tf_meta.data import image_files
    make_folder(tmp_path, [image_files.PARALLEL_FROM // 2] * 2)
    (tmp_path / "class1" / "5.png").write_bytes(bad)
    with pytest.raises(ValueError) as parallel:
        data.folder(str(tmp_path))
    monkeypatch.setattr(image_files, "PARALLEL_FROM", 10**9)
    with pytest.raises(ValueError) as serial:
        data.folder(str(tmp_path))
    assert str(parallel.value) == str(serial.value)
    bad_file = str(tmp_path / "class1" / "5.png")
    assert str(parallel.value).startswith(f"cannot read image {bad_file!r}: ")
    assert message in str(parallel.value) and "\n" not in str(parallel.value)


def test_from_arrays_groups_examples_by_label_in_sorted_label_order():
    x = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    y = np.array([5, 3, 5, 3, 9, 5, 9])
    source = data.from_arrays(x, y, class_names=["three", "five", "nine"])
    assert source.names == ("three", "five", "nine") and source.labels.tolist() == [3, 5, 9]
    assert source.counts.tolist() == [2, 3, 2] and source.examples.shape == (3, 3, 2)
    np.testing.assert_array_equal(source.examples[1], x[[0, 2, 5]])  # in their order
    np.testing.assert_array_equal(source.examples[0, 2], [0, 0])  # padding
    assert source.image_contract is None and source.examples.dtype == np.float32


def test_from_arrays_keeps_images_as_uint8_pixels_with_the_model_size_contract():
    x = np.random.default_rng(0).integers(0, 256, (6, 12, 10, 3)).astype(np.float64)
    source = data.from_arrays(x, [0, 1, 0, 1, 0, 1])
    assert source.examples.dtype == np.uint8 and source.input_shape == (12, 10, 3)
    assert source.image_contract.input_shape == (12, 10, 3)
    assert not source.image_contract.invert


@pytest.mark.parametrize("x,y,message", [
    (np.full((4, 8, 8, 1), 0.5), [0, 0, 1, 1], "look scaled to [0, 1] (largest value 0.5)"),
    (np.full((4, 8, 8, 1), 300.0), [0, 0, 1, 1], "pixels in [0, 255]; got values in [300, 300]"),
    (np.zeros((4, 3)), [0, 1, 0], "labels must be [n] for examples [n, ...]"),
    (np.zeros((4, 3)), [0.0, 1.0, 0.0, 1.0], "labels must be integer class ids"),
    (np.zeros((4, 3)), [2, 2, 2, 2], "1 class(es); an episode needs 2 or more"),
    (np.zeros((4, 3)), [0, 1, 0, 1], "3 class names for 2 classes"),
], ids=["scaled to [0, 1]", "above 255", "lengths", "float labels", "one class", "names"])
def test_from_arrays_refuses_what_would_train_wrong_in_one_line(x, y, message):
    names = ["a", "b", "c"] if "class names" in message else None
    with pytest.raises(ValueError, match=re.escape(message)):
        data.from_arrays(x, y, class_names=names)


@pytest.mark.parametrize("layout,message", [
    ({"train": [2, 2], "val": [2], "test": [2, 2]},
     "/val' has 1 class folder: episodes need 2 classes or more"),
    ({"": [2] * 6}, "are 16x12, not square: set image_size (--image_size), the side of the "
     "square they are resized to"),
], ids=["a one-class split folder", "images not square"])
def test_a_folder_that_cannot_decide_its_splits_or_size_is_one_line(tmp_path, layout, message):
    for name, counts in layout.items():
        for c, n in enumerate(counts):
            for i in range(n):
                os.makedirs(tmp_path / name / f"class{c}", exist_ok=True)
                write_png(tmp_path / name / f"class{c}" / f"{i}.png", np.zeros((12, 16, 1)))
    with pytest.raises(ValueError) as raised:
        data.folder_splits(str(tmp_path))
    assert message in str(raised.value) and "\n" not in str(raised.value)
