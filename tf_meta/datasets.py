"""The datasets a run can name: each one's episode streams, input shape and task kind.

A run (`experiment`) asks for `streams(config)` and gets one `EpisodeStreams`, whatever the
dataset, as pytorch-maml's `get_benchmark_by_name` returns one Benchmark. A new dataset is one
entry in DATASETS.
"""

import functools
from typing import Callable, NamedTuple, Optional

import tensorflow as tf

from tf_meta import backbones, data

EVAL_META_BATCH_SIZE = 50  # validation and test episodes per evaluation step


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
    """

    task: str
    load: Optional[Callable]
    backbone: Optional[Callable] = None
    protocol: str = "tf_meta"


class Location(NamedTuple):
    """The settings that say which data a classification dataset reads."""

    split: str
    data_dir: Optional[str]
    download: bool
    seed: int


def _omniglot(where):
    return data.omniglot(where.split, data_dir=where.data_dir, download=where.download)


def _folder(where):
    return data.folder_splits(where.data_dir, seed=where.seed)


def _synthetic(where):
    return data.synthetic_splits(num_classes=100, input_shape=(28, 28, 1), seed=where.seed)


DATASETS = {
    "omniglot": Dataset("classification", _omniglot, protocol="paper"),
    "folder": Dataset("classification", _folder),
    "synthetic": Dataset("classification", _synthetic),
    "sinusoid": Dataset("regression", None, backbones.sinusoid_mlp,  # MAML paper §5.1
                        protocol="paper"),
}


def streams(config):
    """The EpisodeStreams of `config`'s dataset and episode sizes.

    Raises:
      ValueError: the data cannot be read, or cannot supply episodes of these sizes.
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
    splits = DATASETS[config.dataset].load(
        Location(config.split, config.data_dir, config.download, config.seed))
    if config.trainval:  # Snell et al.'s final models: train+val classes, no validation
        if "val" not in splits:
            raise ValueError(f"--trainval: --dataset={config.dataset} has no validation "
                             "classes to add to the training classes")
        splits = dict(splits, train=data.concatenate(splits["train"], splits.pop("val")))
    data.check_episode_spec(splits["train"], config.train_ways, config.train_shots,
                            config.train_query_shots, "train")
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
