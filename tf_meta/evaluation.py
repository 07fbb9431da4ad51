"""Few-shot evaluation: mean query accuracy over a fixed episode set, with a 95% CI.

Besides accuracy, a learner may declare extra metrics (`MetaLearner.EXTRA_METRICS`), named
in `EXTRA_METRICS` here: the MANN paper's instance accuracy.
"""

import math
from typing import Callable, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tf_meta import console
from tf_meta.data.pipeline import episode_stream
from tf_meta.data.sampling import sample_episode

# The MANN paper's instance-accuracy protocol: 5 classes, 10 samples each, accuracy at
# these presentations of a class.
INSTANCE_CLASSES, INSTANCE_SAMPLES = 5, 10
INSTANCE_PRESENTATIONS = (1, 2, 3, 4, 5, 10)


def confidence_interval(values, z=1.96):
    """(mean, half-width of the normal-approximation 95% CI) of per-episode values."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        raise ValueError(f"need at least 2 episodes for a confidence interval, got {values.size}")
    return float(values.mean()), float(z * values.std(ddof=1) / math.sqrt(values.size))


def evaluate_episodes(learner, dataset, verbose=1, each_on_its_own=False):
    """Accuracy (MSE for regression) of `learner` on every episode of a finite episode dataset.

    Args:
      learner: MetaLearner.
      dataset: finite tf.data.Dataset of batched Episodes.
      verbose: 1 shows a Keras progress bar on a terminal (in a log, nothing: the result
        is the line).
      each_on_its_own: score the answers a default export serves, each query on its own
        (`MetaLearner.independent_query_logits`), instead of the test's.

    Returns:
      dict: accuracy (or mse) mean, ci95 (half-width), episodes (count), plain numbers.
    """
    step = tf.function(lambda episodes: learner.episode_scores(episodes, each_on_its_own))
    total = int(dataset.cardinality())
    bar = keras.utils.Progbar(total if total > 0 else None,
                              verbose=verbose if console.interactive() else 0,
                              unit_name="meta-batch")
    scores = []
    for episodes in dataset:
        scores.append(step(episodes).numpy())
        bar.add(1)
    scores = np.concatenate(scores)
    mean, ci95 = confidence_interval(scores)
    return {"mse" if learner.regression else "accuracy": mean, "ci95": ci95,
            "episodes": int(scores.size)}


def presentation_index(labels):
    """Which presentation of its class each step is: 1 at a class's first step, 2 at its second...

    Args:
      labels: [B, L] int.
    Returns:
      [B, L] int32.
    """
    labels = tf.cast(labels, tf.int32)
    onehot = tf.one_hot(labels, tf.reduce_max(labels) + 1, dtype=tf.int32)  # [B, L, C]
    shown_before = tf.cumsum(onehot, axis=1, exclusive=True)
    return tf.reduce_sum(shown_before * onehot, axis=-1) + 1


def instance_accuracy(learner, source, episodes=1000, seed=0, classes=INSTANCE_CLASSES,
                      samples=INSTANCE_SAMPLES, presentations=INSTANCE_PRESENTATIONS,
                      meta_batch_size=50):
    """The MANN paper's instance accuracy: accuracy at the k-th presentation of a class.

    Each episode draws `classes` classes of `source` and `samples` examples of each
    (`sampling.sample_episode`, stateless in `seed`), shuffled into one sequence of
    classes × samples steps with episode-relative labels shown one step late
    (`MANN.sequence_logits`). A step is the k-th presentation when its class appeared k − 1
    times before it in the episode; its prediction (argmax over the first `classes`
    outputs) is made before its label is shown.

    Args:
      learner: a learner with `sequence_logits(x, y, training)` (MANN) and `max_ways`.
      source: data.Source with >= `classes` classes of >= `samples` examples each.
      episodes, seed: size and seed of the fixed episode set.
      classes, samples: the paper's 5 classes × 10 samples (episodes of 50 steps).
      presentations: the k to report, each <= samples.
      meta_batch_size: episodes per forward pass.

    Returns:
      dict k -> accuracy (python float) over every k-th presentation, for k in presentations.

    Raises:
      ValueError: the source or the learner's head cannot serve these episodes.
    """
    if classes > learner.max_ways or classes > source.num_classes:
        raise ValueError(f"{classes}-class episodes need a head of >= {classes} outputs "
                         f"(has {learner.max_ways}) and a source of >= {classes} classes "
                         f"(has {source.num_classes})")
    if min(source.counts) < samples or max(presentations) > samples:
        raise ValueError(f"{samples} samples per class need that many examples in every "
                         f"class (fewest: {min(source.counts)}) and presentations <= "
                         f"{samples}, got {presentations}")
    examples, counts = tf.constant(source.examples), tf.constant(source.counts, tf.int32)
    stream = episode_stream(
        lambda s: sample_episode(s, examples, counts, classes, samples, 0),
        meta_batch_size, seed, num_episodes=episodes)

    @tf.function
    def score(x, y):
        logits = learner.sequence_logits(x, y, training=False)[..., :classes]
        hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(y, tf.int32))
        return tf.cast(hits, tf.float32), presentation_index(y)

    hits, shown = np.zeros(samples + 1), np.zeros(samples + 1)
    for episode in stream:
        hit, index = (t.numpy().ravel() for t in score(episode.support_x, episode.support_y))
        hits += np.bincount(index, weights=hit, minlength=samples + 1)
        shown += np.bincount(index, minlength=samples + 1)
    return {k: float(hits[k] / shown[k]) for k in presentations}


class ExtraMetric(NamedTuple):
    """An evaluation besides accuracy ± CI, which a learner declares by name.

    Fields:
      compute: (learner, test source, episodes, seed) -> JSON-able value; ValueError
        when the source or learner cannot serve it.
      describe: value -> one line for the run's output.
    """

    compute: Callable
    describe: Callable


EXTRA_METRICS = {
    "instance_accuracy": ExtraMetric(
        instance_accuracy,
        lambda scores: (f"instance accuracy ({INSTANCE_CLASSES} classes x {INSTANCE_SAMPLES} "
                        "samples) at presentation " + ", ".join(
                            f"{k}: {100 * v:.1f}%" for k, v in scores.items()))),
}
