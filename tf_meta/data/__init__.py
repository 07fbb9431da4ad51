"""Episodic data: class-indexed sources, stateless sampling, tf.data streams."""

from tf_meta.data.pipeline import check_episode_spec, make_episode_dataset
from tf_meta.data.sampling import sample_class_ids, sample_episode, sample_example_ids
from tf_meta.data.sources import (Source, folder, folder_splits, omniglot, split_classes,
                                  synthetic, synthetic_splits)

__all__ = ["Source", "check_episode_spec", "folder", "folder_splits", "make_episode_dataset",
           "omniglot", "sample_class_ids", "sample_episode", "sample_example_ids",
           "split_classes", "synthetic", "synthetic_splits"]
