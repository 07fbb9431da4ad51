"""The sinusoid regression family of the MAML paper (Finn et al. 2017, §5.1)."""

import math

import tensorflow as tf

from tf_meta.data.pipeline import check_positive, episode_stream
from tf_meta.episode import Episode

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


def sample_sinusoid_episode(seed, shots, query_shots):
    """One task y = A·sin(x − φ), A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5].

    Args:
      seed: [2] int stateless seed.
      shots: support points (K); query_shots: query points.

    Returns:
      Episode with support_x/support_y [shots, 1], query_x/query_y [query_shots, 1] float32.
    """
    task_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    amplitude, phase = tf.unstack(tf.random.stateless_uniform(
        [2], task_seed, minval=[AMPLITUDE[0], PHASE[0]], maxval=[AMPLITUDE[1], PHASE[1]]))
    x = tf.random.stateless_uniform([shots + query_shots, 1], x_seed, *X_RANGE)
    y = amplitude * tf.sin(x - phase)
    return Episode(x[:shots], y[:shots], x[shots:], y[shots:])


def make_sinusoid_dataset(shots, query_shots, meta_batch_size, seed, num_episodes=None,
                          start=0):
    """A tf.data stream of meta-batches of sinusoid Episodes (see episode_stream)."""
    check_positive(shots=shots, query_shots=query_shots)
    return episode_stream(lambda s: sample_sinusoid_episode(s, shots, query_shots),
                          meta_batch_size, seed, num_episodes, start)
