"""Few-shot evaluation: mean query accuracy over a fixed episode set, with a 95% CI."""

import math

import keras
import numpy as np
import tensorflow as tf


def confidence_interval(values, z=1.96):
    """(mean, half-width of the normal-approximation 95% CI) of per-episode values."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        raise ValueError(f"need at least 2 episodes for a confidence interval, got {values.size}")
    return float(values.mean()), float(z * values.std(ddof=1) / math.sqrt(values.size))


def evaluate_episodes(learner, dataset, verbose=1):
    """Accuracy (MSE for regression) of `learner` on every episode of a finite episode dataset.

    Args:
      learner: MetaLearner.
      dataset: finite tf.data.Dataset of batched Episodes.
      verbose: 1 shows a Keras progress bar.

    Returns:
      dict: accuracy (or mse) mean, ci95 (half-width), episodes (count), plain numbers.
    """
    step = tf.function(learner.episode_scores)
    total = int(dataset.cardinality())
    bar = keras.utils.Progbar(total if total > 0 else None, verbose=verbose,
                              unit_name="meta-batch")
    scores = []
    for episodes in dataset:
        scores.append(step(episodes).numpy())
        bar.add(1)
    scores = np.concatenate(scores)
    mean, ci95 = confidence_interval(scores)
    return {"mse" if learner.regression else "accuracy": mean, "ci95": ci95,
            "episodes": int(scores.size)}
