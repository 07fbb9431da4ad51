"""The datasets a run can name: each one's episode streams, input shape and task kind.

A run (`experiment`) asks for `streams(config)` and gets one `EpisodeStreams`, whatever the
dataset, as pytorch-maml's `get_benchmark_by_name` returns one Benchmark. A new dataset is one
entry in DATASETS. A dataset whose files decide settings (an image folder: its image size,
channels, class counts) says so through `inspect`, which the run reads before it starts.
"""

import functools
from typing import Callable, NamedTuple, Optional

import tensorflow as tf

from tf_meta import backbones, data

EVAL_META_BATCH_SIZE = 50  # validation and test episodes per evaluation step
# The flags of the episode sizes each split is drawn with (val and test: the test's).
SPLIT_FLAGS = {"train": ("--train_ways", "--train_shots", "--train_query_shots"),
               "test": ("--ways", "--shots", "--query_shots")}


class EpisodeStreams(NamedTuple):
    """What a run trains and evaluates on.

    Fields:
      train: start -> endless tf.data.Dataset of training meta-batches from meta-batch
        `start` of the run's stream (a resumed run continues where it stopped).
      val: finite dataset of validation meta-batches, or None (no validation split).
      test: finite dataset of the fixed test episodes.
      input_shape: shape of one example.
      test_source: data.Source of the test classes (None for generated tasks), for the
        evaluations a learner declares besides accuracy.
      image_contract: the training source's data.ImageContract, which an export serves
        images through; None for feature vectors and generated tasks.
    """

    train: Callable[[int], tf.data.Dataset]
    val: Optional[tf.data.Dataset]
    test: tf.data.Dataset
    input_shape: tuple
    test_source: Optional[data.Source]
    image_contract: Optional[data.ImageContract] = None


class Dataset(NamedTuple):
    """A named dataset.

    Fields:
      task: "classification" or "regression" (`MetaLearner.TASKS`).
      load: Location -> dict split -> data.Source (classification), or None for tasks
        generated on the fly.
      backbone: None, or () -> the network its paper prescribes (sinusoid: the MAML paper's
        MLP), given to learners instead of their default.
      protocol: the protocol a run on it takes when `--protocol` is unset
        (`protocols.PROTOCOLS`): "paper" where the papers report their numbers (Omniglot),
        "tf_meta" elsewhere (no paper trained on a user's folder or on synthetic clusters).
      inspect: None, or Location -> DataFacts: what the data decides, read before loading it.
      settings: the data settings (DATA_SETTINGS) it takes.
    """

    task: str
    load: Optional[Callable]
    backbone: Optional[Callable] = None
    protocol: str = "tf_meta"
    inspect: Optional[Callable] = None
    settings: tuple = ()


class Location(NamedTuple):
    """The settings that say which data a classification dataset reads, and how.

    image_size, channels, invert, split_fractions ((train, val, test) or None): an image
    folder's (`data.folder_splits`); None where the folder decides.
    """

    split: str
    data_dir: Optional[str]
    download: bool
    seed: int
    image_size: Optional[int] = None
    channels: Optional[int] = None
    invert: bool = False
    split_fractions: Optional[tuple] = None


class DataFacts(NamedTuple):
    """What a dataset's files decide about a run, read before the run loads them.

    Fields:
      settings: setting -> the value the data gives it when unset (a folder: image_size and
        channels from its images, split_fractions None for train/ val/ test/ folders).
      classes: split -> its classes; examples: split -> the examples of its smallest class.
    """

    settings: dict
    classes: dict
    examples: dict


DATA_SETTINGS = ("image_size", "channels", "invert", "split_fractions")


def _omniglot(where):
    return data.omniglot(where.split, data_dir=where.data_dir, download=where.download)


def _folder(where):
    return data.folder_splits(where.data_dir, where.split_fractions, where.seed,
                              where.image_size, where.channels, where.invert)


def _folder_facts(where):
    """The DataFacts of an image folder: listed, its images decoded once if the image size
    or channels are unset (`data.image_settings`)."""
    if where.split_fractions and data.has_split_folders(where.data_dir):
        raise ValueError(f"--split_fractions does not apply to --data_dir={where.data_dir}: its "
                         "train/ and test/ folders are the splits; leave it out")
    layout = data.folder_layout(where.data_dir, where.split_fractions, where.seed)
    image_size, channels = data.image_settings(layout, where.image_size, where.channels)
    fractions = layout.fractions and ",".join(f"{f:g}" for f in layout.fractions)
    return DataFacts(dict(image_size=image_size, channels=channels, split_fractions=fractions),
                     layout.classes(), layout.fewest_images())


def split_fractions(text):
    """The (train, val, test) fractions of a --split_fractions value ("0.7,0.15,0.15"), or
    None for None.

    Raises:
      ValueError: one line naming --split_fractions.
    """
    if text is None:
        return None
    try:
        fractions = tuple(float(f) for f in text.split(","))
    except ValueError:
        fractions = ()
    data.check_fractions(fractions, f"--split_fractions={text}")
    return fractions


def location(config):
    """The Location of `config`'s data."""
    return Location(config.split, config.data_dir, config.download, config.seed,
                    config.image_size, config.channels, config.invert,
                    split_fractions(config.split_fractions))


def _synthetic(where):
    return data.synthetic_splits(num_classes=100, input_shape=(28, 28, 1), seed=where.seed)


DATASETS = {
    "omniglot": Dataset("classification", _omniglot, protocol="paper"),
    "folder": Dataset("classification", _folder, inspect=_folder_facts, settings=DATA_SETTINGS),
    "synthetic": Dataset("classification", _synthetic),
    "sinusoid": Dataset("regression", None, backbones.sinusoid_mlp,  # MAML paper §5.1
                        protocol="paper"),
}


def streams(config):
    """The EpisodeStreams of `config`'s dataset and episode sizes.

    Raises:
      ValueError: the data cannot be read, or cannot supply episodes of these sizes (the
        message names the flag to change).
    """
    test_sizes = dict(shots=config.shots, query_shots=config.query_shots,
                      meta_batch_size=EVAL_META_BATCH_SIZE, seed=config.eval_seed)
    if DATASETS[config.dataset].load is None:
        train = functools.partial(data.make_sinusoid_dataset, config.train_shots,
                                  config.train_query_shots, config.meta_batch_size, config.seed)
        val, test = (data.make_sinusoid_dataset(config.shots, config.query_shots,
                                                EVAL_META_BATCH_SIZE, config.eval_seed + i,
                                                num_episodes=n)
                     for i, n in enumerate((config.val_episodes, config.eval_episodes)))
        return EpisodeStreams(train, val, test, (1,), None)
    splits = DATASETS[config.dataset].load(location(config))
    if config.trainval:  # Snell et al.'s final models: train+val classes, no validation
        if "val" not in splits:
            raise ValueError(f"--trainval: --dataset={config.dataset} has no validation "
                             "classes to add to the training classes")
        splits = dict(splits, train=data.concatenate(splits["train"], splits.pop("val")))
    for split, source in splits.items():
        flags = SPLIT_FLAGS["train" if split == "train" else "test"]
        data.check_episode_spec(source, *(getattr(config, f[2:]) for f in flags), split, flags)
    train = functools.partial(data.make_episode_dataset, splits["train"], config.train_ways,
                              config.train_shots, config.train_query_shots,
                              config.meta_batch_size, config.seed, split="train")
    val = (data.make_episode_dataset(splits["val"], config.ways, **test_sizes, split="val",
                                     num_episodes=config.val_episodes)
           if "val" in splits else None)
    test = data.make_episode_dataset(splits["test"], config.ways, **test_sizes, split="test",
                                     num_episodes=config.eval_episodes)
    return EpisodeStreams(train, val, test, splits["train"].input_shape, splits["test"],
                          splits["train"].image_contract)
