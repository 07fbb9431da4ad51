"""Episode streams: seeds -> episodes -> meta-batches, as a tf.data pipeline."""

import tensorflow as tf

from tf_meta.data.sampling import sample_episode


def check_positive(**sizes):
    """Raises ValueError naming the first episode size below 1."""
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")


def check_episode_spec(source, ways, shots, query_shots, split="source", flags=None):
    """Raises ValueError if `source` cannot supply N-way K-shot episodes with these sizes.

    `flags`: the (ways, shots, query_shots) settings' flags, e.g. ("--train_ways",
    "--train_shots", "--train_query_shots"): the message then names the one to change.
    """
    check_positive(ways=ways, shots=shots, query_shots=query_shots)
    ways_name, shots_name, queries_name = flags or ("ways", "shots", "query_shots")
    if ways > source.num_classes:
        raise ValueError(f"{ways_name}={ways} exceeds the {source.num_classes} classes of the "
                         f"{split} split" + (f": lower {ways_name}" if flags else ""))
    needed = shots + query_shots
    short = [i for i, n in enumerate(source.counts) if n < needed]
    if short:
        raise ValueError(f"shots + query_shots = {needed} exceeds the examples of "
                         f"{len(short)} class(es) of the {split} split (class "
                         f"{source.names[short[0]]!r} has {source.counts[short[0]]})"
                         + (f": lower {shots_name} or {queries_name}" if flags else ""))


def make_episode_dataset(source, ways, shots, query_shots, meta_batch_size, seed,
                         num_episodes=None, split="source", start=0):
    """A tf.data stream of meta-batches of N-way K-shot Episodes drawn from `source`.

    Args:
      source: data.sources.Source.
      ways, shots, query_shots: episode sizes.
      meta_batch_size, seed, num_episodes, start: see `episode_stream`.
      split: name used in error messages.

    Returns:
      tf.data.Dataset of Episode, fields [meta_batch_size, ways*shots, ...] etc.
    """
    check_episode_spec(source, ways, shots, query_shots, split)
    examples = tf.constant(source.examples)
    counts = tf.constant(source.counts, tf.int32)
    return episode_stream(
        lambda episode_seed: sample_episode(episode_seed, examples, counts, ways, shots,
                                            query_shots),
        meta_batch_size, seed, num_episodes, start)


def episode_stream(sample_fn, meta_batch_size, seed, num_episodes=None, start=0):
    """Meta-batches of sample_fn(episode seed), episode i seeded by the stateless (seed, i).

    So a stream is reproducible byte for byte and a finite stream is a fixed episode set.

    Args:
      sample_fn: [2] int64 seed -> Episode (pure TF).
      meta_batch_size: episodes per element.
      seed: int, identifies the stream.
      num_episodes: None for an endless stream, else the number of episodes (the last
        meta-batch holds the remainder).
      start: the endless stream's first meta-batch: the stream from meta-batch `start` on,
        the position a resumed training run continues from.
    """
    if num_episodes:
        ids = tf.data.Dataset.range(num_episodes)
    else:
        ids = tf.data.Dataset.counter(start * meta_batch_size)
    episodes = ids.map(lambda i: sample_fn(tf.stack([tf.constant(seed, tf.int64), i])),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    episodes = episodes.batch(meta_batch_size, drop_remainder=num_episodes is None)
    # Prefetch overlaps episode sampling with the learner's step on the other core.
    return episodes.prefetch(tf.data.AUTOTUNE)
