"""Episode sampling properties, on a source whose every example names its own (class, index)."""

import collections
import re

import numpy as np
import pytest
import tensorflow as tf

from tf_meta.data import Source, check_episode_spec, make_episode_dataset, sample_episode
from tf_meta.episode import Episode, num_ways

WAYS, SHOTS, QUERY = 5, 2, 3


def tagged_source(num_classes=12, per_class=8, counts=None):
    """examples[c, i] = [c, i]: each example tells which class and index it came from."""
    c, i = np.meshgrid(np.arange(num_classes), np.arange(per_class), indexing="ij")
    counts = np.full(num_classes, per_class, np.int32) if counts is None else np.asarray(counts)
    return Source(np.stack([c, i], -1).astype(np.float32), counts.astype(np.int32),
                  np.arange(num_classes), tuple(f"c{k}" for k in range(num_classes)))


def episodes(source, n=50, seed=3, ways=WAYS, shots=SHOTS, query=QUERY):
    ds = make_episode_dataset(source, ways, shots, query, meta_batch_size=1, seed=seed,
                              num_episodes=n)
    return [Episode(*(t[0].numpy() for t in ep)) for ep in ds]


def test_episode_structure_classes_counts_labels_disjoint():
    for ep in episodes(tagged_source()):
        assert ep.support_x.shape == (WAYS * SHOTS, 2) and ep.query_x.shape == (WAYS * QUERY, 2)
        assert set(ep.support_y) == set(ep.query_y) == set(range(WAYS))
        assert collections.Counter(ep.support_y.tolist()) == {k: SHOTS for k in range(WAYS)}
        assert collections.Counter(ep.query_y.tolist()) == {k: QUERY for k in range(WAYS)}
        # One label <-> one source class, in support and query alike.
        label_class = {}
        for x, y in zip(np.concatenate([ep.support_x, ep.query_x]),
                        np.concatenate([ep.support_y, ep.query_y])):
            assert label_class.setdefault(int(y), int(x[0])) == int(x[0])
        assert len(set(label_class.values())) == WAYS
        # Support and query never share an example.
        support = {tuple(x) for x in ep.support_x}
        assert len(support) == WAYS * SHOTS
        assert not support & {tuple(x) for x in ep.query_x}


def test_same_seed_same_bytes_other_seed_differs():
    source = tagged_source()
    a, b, c = episodes(source, seed=7), episodes(source, seed=7), episodes(source, seed=8)
    for ea, eb in zip(a, b):
        for ta, tb in zip(ea, eb):
            assert ta.tobytes() == tb.tobytes()
    assert any(ea.support_x.tobytes() != ec.support_x.tobytes() for ea, ec in zip(a, c))


def test_episodes_in_a_stream_differ_and_order_is_shuffled():
    eps = episodes(tagged_source(), n=40)
    assert len({e.support_x.tobytes() for e in eps}) == 40
    assert any(np.any(np.diff(e.support_y) < 0) for e in eps)  # not grouped by label
    assert any(np.any(np.diff(e.query_y) < 0) for e in eps)


def test_classes_and_examples_are_drawn_uniformly():
    class_hits, example_hits = collections.Counter(), collections.Counter()
    for ep in episodes(tagged_source(num_classes=10, per_class=8), n=400, ways=3, shots=1,
                       query=1):
        for x in np.concatenate([ep.support_x, ep.query_x]):
            example_hits[int(x[1])] += 1
        class_hits.update(int(c) for c in set(ep.support_x[:, 0]))
    # Expected 400 * 3 / 10 = 120 per class, 2400 / 8 = 300 per example index.
    assert set(class_hits) == set(range(10)) and all(80 < n < 160 for n in class_hits.values())
    assert set(example_hits) == set(range(8)) and all(230 < n < 370 for n in example_hits.values())


def test_padding_of_short_classes_is_never_drawn():
    source = tagged_source(num_classes=6, per_class=8, counts=[8, 5, 8, 5, 5, 8])
    for ep in episodes(source, n=60, ways=4, shots=2, query=3):
        for x in np.concatenate([ep.support_x, ep.query_x]):
            assert x[1] < source.counts[int(x[0])]


def test_sample_episode_is_a_pure_function_of_its_seed():
    source = tagged_source()
    args = (tf.constant(source.examples), tf.constant(source.counts), WAYS, SHOTS, QUERY)
    first = sample_episode(tf.constant([1, 2], tf.int64), *args)
    again = sample_episode(tf.constant([1, 2], tf.int64), *args)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_meta_batch_axis_and_num_ways():
    ds = make_episode_dataset(tagged_source(), WAYS, SHOTS, QUERY, meta_batch_size=4, seed=0)
    batch = next(iter(ds))
    assert isinstance(batch, Episode)
    assert batch.support_x.shape == (4, WAYS * SHOTS, 2) and batch.query_y.shape == (4, 15)
    assert int(num_ways(batch.support_y)) == WAYS


@pytest.mark.parametrize("ways,shots,query,message", [
    (13, 1, 1, "ways=13 exceeds the 12 classes"),
    (5, 4, 5, "shots + query_shots = 9 exceeds"),
    (0, 1, 1, "ways must be positive"),
    (5, 0, 1, "shots must be positive"),
])
def test_impossible_episode_specs_are_rejected(ways, shots, query, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_episode_spec(tagged_source(), ways, shots, query)


def test_a_short_class_is_named():
    source = tagged_source(num_classes=6, counts=[8, 8, 3, 8, 8, 8])
    with pytest.raises(ValueError, match="class 'c2' has 3"):
        make_episode_dataset(source, 3, 2, 2, 1, seed=0)
