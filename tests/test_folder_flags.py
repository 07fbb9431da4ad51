"""Your own images through a run, first time right: the folder decides what it can.

A run on `--dataset=folder` reads its image size and channels from the images (or the
flags), splits its classes by `--split_fractions` or its train/ val/ test/ folders, fits
the tf_meta protocol's episodes to the classes and images each split has, records every
resolved value in flags.txt, and names the flag to change when a value set does not fit.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from tf_meta import ALGORITHMS, datasets, experiment
from tf_meta.config import RunConfig, flag_definitions

SHORT = dict(steps=1, eval_every=1, val_episodes=2, eval_episodes=2)  # not episode sizes


def write_folder(root, classes, images, size, channels, seed=0):
    """`classes` class folders of `images` PNGs each, size x size x channels, each class
    its own colour; `root` may be local or on any TensorFlow filesystem."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        colour = rng.integers(0, 256, channels)
        for i in range(images):
            pixels = np.clip(colour + rng.normal(0, 30, (size, size, channels)), 0, 255)
            tf.io.write_file(f"{root}/class{c}/{i}.png",
                             tf.io.encode_png(tf.constant(pixels, tf.uint8)))
    return str(root)


def folder_config(path, **settings):
    return RunConfig.from_settings(**{"dataset": "folder", "data_dir": path, **SHORT,
                                      **settings}).with_data_settings()


def test_a_64x64_rgb_folder_keeps_its_size_and_colour_by_default(tmp_path):
    config = folder_config(write_folder(tmp_path / "data", 6, 3, 64, 3))
    assert (config.image_size, config.channels, config.invert) == (64, 3, False)
    streams = datasets.streams(config)
    assert streams.input_shape == (64, 64, 3) and streams.image_contract.input_shape == (64, 64, 3)
    assert "--image_size=64" in config.to_flags().split()  # flags.txt replays it
    assert "--channels=3" in config.to_flags().split()


def test_grayscale_images_stored_as_rgb_give_one_channel_and_sizes_are_bounded(tmp_path):
    """R = G = B everywhere is grayscale (TFDS stores Omniglot so); larger images are shrunk
    to 84, smaller ones enlarged to 28, the smallest side every network takes."""
    gray = write_folder(tmp_path / "gray", 6, 2, 100, 1)
    for file in tf.io.gfile.glob(f"{gray}/*/*.png"):  # the same pixels as RGB files
        pixels = tf.io.decode_png(tf.io.read_file(file))
        tf.io.write_file(file, tf.io.encode_png(tf.repeat(pixels, 3, axis=-1)))
    config = folder_config(gray)
    assert (config.image_size, config.channels) == (84, 1)
    small = folder_config(write_folder(tmp_path / "small", 6, 2, 12, 3))
    assert (small.image_size, small.channels) == (28, 3)


def test_image_size_channels_polarity_and_split_fractions_are_flags(tmp_path):
    names = {d.name for d in flag_definitions()}
    assert {"image_size", "channels", "invert", "split_fractions"} <= names
    path = write_folder(tmp_path / "data", 8, 3, 40, 3)
    plain = datasets.streams(folder_config(path, image_size=32, channels=1))
    inverted = datasets.streams(folder_config(path, image_size=32, channels=1, invert=True))
    assert plain.input_shape == (32, 32, 1) and inverted.image_contract.invert
    np.testing.assert_array_equal(inverted.test_source.examples,
                                  255 - plain.test_source.examples)
    config = folder_config(path, split_fractions="0.5,0.25,0.25")
    assert datasets.DATASETS["folder"].inspect(datasets.location(config)).classes == {
        "train": 4, "val": 2, "test": 2}
    no_val = datasets.streams(folder_config(path, split_fractions="0.75,0,0.25"))
    assert no_val.val is None and no_val.test_source.num_classes == 2


def test_a_folder_run_from_before_the_folder_settings_reads_as_it_was_trained(tmp_path):
    """Its flags.txt has no --image_size: folders were read at 28x28 grayscale and split
    0.7,0.15,0.15, so it resumes in its folder (run_folder compares these settings)."""
    path = write_folder(tmp_path / "data", 10, 2, 40, 3)
    (tmp_path / "flags.txt").write_text(f"--dataset=folder\n--data_dir={path}\n--protocol="
                                        "tf_meta\n--train_ways=5\n")
    old = RunConfig.from_flags_file(str(tmp_path / "flags.txt"))
    assert (old.image_size, old.channels, old.invert, old.split_fractions) == (
        28, 1, False, "0.7,0.15,0.15")


def test_the_fitted_protocol_keeps_what_the_user_set():
    from tf_meta.protocols import fit_to_splits
    classes, examples = {"train": 7, "val": 3, "test": 4}, {"train": 6, "val": 5, "test": 9}
    assert fit_to_splits("protonet", "folder", {}, classes, examples) == dict(
        ways=3, shots=1, query_shots=4, train_ways=7, train_shots=1, train_query_shots=5)
    assert fit_to_splits("reptile", "folder", {"shots": 2}, classes, examples) == dict(
        ways=3, shots=2, query_shots=3, train_ways=3, train_shots=5, train_query_shots=1)
    assert fit_to_splits("protonet", "folder", {"train_ways": 60}, classes, examples)[
        "train_ways"] == 60  # set: refused when the data loads, naming --train_ways


@pytest.mark.parametrize("settings,message", [
    (dict(train_ways=60), ("--train_ways=60 exceeds the 6 classes of the train split: lower "
                           "--train_ways",)),
    (dict(ways=3), ("--ways=3 exceeds the 2 classes of the val split: lower --ways",)),
    (dict(shots=8), ("shots + query_shots = 9 exceeds the examples of 2 class(es) of the val "
                     "split (class ", "has 8): lower --shots or --query_shots")),
    (dict(train_shots=8, train_query_shots=1), (
        "shots + query_shots = 9 exceeds the examples of", "of the train split",
        "lower --train_shots or --train_query_shots")),
    (dict(image_size=20), ("--image_size=20: it must be >= 28",)),
    (dict(channels=2), ("--channels=2: 1 (grayscale) or 3 (RGB)",)),
    (dict(split_fractions="0.7,0.3"), ("--split_fractions=0.7,0.3: give three fractions",)),
    (dict(split_fractions="0.5,0.5,0"), ("--split_fractions=0.5,0.5,0: give three",)),
], ids=["train_ways", "ways", "shots", "train_shots", "image_size", "channels", "two fractions",
        "no test"])
def test_a_setting_that_does_not_fit_the_folder_names_its_flag(tmp_path, settings, message):
    """Before: `ways=60 exceeds the 7 classes of the train split`, naming no flag."""
    path = write_folder(tmp_path / "data", 10, 8, 28, 1)
    with pytest.raises(ValueError) as raised:
        experiment.train_and_evaluate(
            RunConfig.from_settings(dataset="folder", data_dir=path, export_dir="",
                                    **SHORT, **settings), str(tmp_path / "run"))
    assert all(part in str(raised.value) for part in message), str(raised.value)
    assert "\n" not in str(raised.value) and not (tmp_path / "run").exists()


def test_folder_settings_are_refused_on_other_datasets_and_where_they_do_not_apply(tmp_path):
    with pytest.raises(ValueError, match="--image_size applies to --dataset=folder, not to "
                       "--dataset=omniglot"):
        RunConfig(image_size=28)
    for split in ("train", "test"):
        write_folder(tmp_path / "split" / split, 3, 2, 28, 1)
    with pytest.raises(ValueError, match="--split_fractions does not apply to --data_dir=.*: "
                       "its train/ and test/ folders are the splits; leave it out"):
        folder_config(str(tmp_path / "split"), split_fractions="0.5,0,0.5")
    write_folder(tmp_path / "mixed", 3, 2, 30, 1)
    write_folder(tmp_path / "mixed", 6, 1, 40, 1, seed=1)  # class0-5/0.png at 40x40
    with pytest.raises(ValueError, match=r"have 2 sizes \(.*30x30, .*40x40\): set image_size "
                       r"\(--image_size\)"):
        folder_config(str(tmp_path / "mixed"))


@pytest.fixture(scope="module")
def rgb_84(tmp_path_factory):
    """10 classes x 4 RGB 84x84 PNGs: mini-ImageNet's shape."""
    return write_folder(tmp_path_factory.mktemp("rgb") / "images", 10, 4, 84, 3)


def assert_exports_84x84x3(result, export_dir):
    meta = json.loads((export_dir / "1" / "assets.extra" / "tf_meta.json").read_text())
    assert {k: meta["image_contract"][k] for k in ("height", "width", "channels")} == dict(
        height=84, width=84, channels=3)
    served = tf.saved_model.load(result.export).signatures["serving_default"]
    images = np.random.default_rng(0).uniform(0, 255, (4, 84, 84, 3)).astype("f4")
    answer = served(support_images=tf.constant(images[:2]),
                    support_labels=tf.constant([0, 1], tf.int32),
                    query_images=tf.constant(images[2:]))
    assert answer["probabilities"].shape == (2, 2)


def test_a_ten_class_rgb_folder_trains_on_the_first_try_with_defaults_and_exports(rgb_84,
                                                                                    tmp_path):
    """Before: --train_ways=60 (ProtoNet's Omniglot protocol), then 2 validation classes for
    5-way episodes, then 1 test class; and 28x28 grayscale. Now 6/2/2 classes, 6-way
    training, 2-way tests, 84x84 RGB, recorded in flags.txt for a replay."""
    result = experiment.train_and_evaluate(
        RunConfig.from_settings(dataset="folder", data_dir=rgb_84,
                                export_dir=str(tmp_path / "export"), **SHORT),
        str(tmp_path / "run"))
    assert result.lines[0].startswith("test accuracy 2-way 1-shot: ")
    flags = (tmp_path / "run" / "flags.txt").read_text().split()
    for flag in ("--train_ways=6", "--ways=2", "--query_shots=3", "--train_query_shots=3",
                 "--image_size=84", "--channels=3", "--split_fractions=0.7,0.15,0.15"):
        assert flag in flags
    replayed = RunConfig.from_flags_file(str(tmp_path / "run" / "flags.txt"))
    assert replayed.with_data_settings() == replayed  # the file says it all: a replay
    assert_exports_84x84x3(result, tmp_path / "export")


ALGORITHM_SETTINGS = {  # the smallest inner loops and memories: the image path is under test
    "maml": dict(inner_steps=1, test_inner_steps=1, meta_batch_size=1),
    "fomaml": dict(inner_steps=1, test_inner_steps=1, meta_batch_size=1),
    "reptile": dict(inner_steps=1, test_inner_steps=1, meta_batch_size=1),
    "mann": dict(controller_units=8, memory_slots=8, memory_width=4, read_heads=1,
                 meta_batch_size=1),
    "snail": dict(meta_batch_size=1),
}


@pytest.mark.slow  # 15-30 s each, mostly tracing the exports' signatures; ProtoNet: above
@pytest.mark.parametrize("algo", [algo for algo in ALGORITHMS if algo != "protonet"])
def test_an_rgb_84x84_folder_trains_and_exports_with_every_algorithm(rgb_84, tmp_path, algo):
    config = RunConfig.from_settings(algo=algo, dataset="folder", data_dir=rgb_84,
                                     export_dir=str(tmp_path / "export"), **SHORT,
                                     **ALGORITHM_SETTINGS.get(algo, {}))
    assert_exports_84x84x3(experiment.train_and_evaluate(config, str(tmp_path / "run")),
                           tmp_path / "export")
