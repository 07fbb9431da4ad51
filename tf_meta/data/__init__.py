"""Episodic data: class-indexed sources, stateless sampling, tf.data streams."""

from tf_meta.data.arrays import from_arrays
from tf_meta.data.folders import (FolderLayout, folder, folder_layout, folder_splits,
                                  has_split_folders, image_settings)
from tf_meta.data.images import ImageContract, to_model_pixels
from tf_meta.data.pipeline import check_episode_spec, episode_stream, make_episode_dataset
from tf_meta.data.sampling import sample_class_ids, sample_episode, sample_example_ids
from tf_meta.data.sinusoid import make_sinusoid_dataset, sample_sinusoid_episode
from tf_meta.data.sources import (Source, check_fractions, concatenate, omniglot,
                                  omniglot_contract, split_classes, synthetic, synthetic_splits)

__all__ = ["FolderLayout", "ImageContract", "Source", "check_episode_spec", "check_fractions",
           "concatenate", "episode_stream", "folder", "folder_layout", "folder_splits",
           "from_arrays", "has_split_folders", "image_settings", "make_episode_dataset",
           "make_sinusoid_dataset", "omniglot", "omniglot_contract", "sample_class_ids",
           "sample_episode", "sample_example_ids", "sample_sinusoid_episode",
           "split_classes", "synthetic", "synthetic_splits", "to_model_pixels"]
