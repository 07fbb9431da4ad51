"""Evaluation: an episode's answer never depends on the episodes evaluated beside it.

Every learner is evaluated on meta-batches of 50 test episodes; each episode's BatchNorm
statistics (and anything else) must come from that episode alone, or a test score would
depend on which episodes happened to share its meta-batch. Images, so every learner's
backbone has BatchNorm.
"""

import keras
import numpy as np
import pytest

from tf_meta import ALGORITHMS, build_learner, data, evaluation
from tf_meta.episode import Episode

# Short inner loops and a small memory: isolation, not the learners, is under test.
SMALL = {"maml": dict(test_inner_steps=1), "fomaml": dict(test_inner_steps=1),
         "reptile": dict(test_inner_steps=2),
         "mann": dict(controller_units=16, memory_slots=8, memory_width=8, read_heads=1)}


@pytest.fixture(scope="module")
def meta_batch():
    """50 5-way 1-shot episodes of 28x28 images, 1 query per class."""
    source = data.synthetic(40, 10, (28, 28, 1))
    return next(iter(data.make_episode_dataset(source, 5, 1, 1, 50, seed=3)))


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_an_episode_scores_the_same_alone_and_beside_49_others(algo, meta_batch):
    keras.utils.set_random_seed(0)
    learner = build_learner(algo, (28, 28, 1), ways=5, **SMALL.get(algo, {}))
    beside = learner.predict_step(meta_batch).numpy()  # [50, Q, N]
    for i in (0, 17, 49):
        alone = learner.predict_step(Episode(*(t[i:i + 1] for t in meta_batch))).numpy()[0]
        np.testing.assert_allclose(alone, beside[i], rtol=1e-4, atol=1e-5,
                                   err_msg=f"{algo}: episode {i} depends on its neighbours")


def test_the_confidence_interval_is_the_normal_approximation_over_episodes():
    mean, ci95 = evaluation.confidence_interval([0.0, 1.0, 1.0, 0.0])
    assert mean == 0.5 and ci95 == pytest.approx(1.96 * np.std([0, 1, 1, 0], ddof=1) / 2)
    with pytest.raises(ValueError, match="at least 2 episodes"):
        evaluation.confidence_interval([1.0])
