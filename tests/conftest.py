"""Shared fixtures: seeding, offline TFDS data, small sources. CPU only, no downloads."""

import os
import pathlib

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# This project's offline machines keep a prepared TFDS folder beside the checkout.
SHARED_TFDS = ROOT.parent / "shared" / "data" / "tfds"
if "TFDS_DATA_DIR" not in os.environ and (SHARED_TFDS / "omniglot").is_dir():
    os.environ["TFDS_DATA_DIR"] = str(SHARED_TFDS)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def omniglot_splits():
    """The real Omniglot, vinyals split, loaded once per session from TFDS_DATA_DIR."""
    from tf_meta import data
    try:
        return data.omniglot("vinyals", download=False)
    except ValueError as e:
        if os.environ.get("CI"):
            raise  # CI has the data: a missing dataset there is a failure, not a skip
        pytest.skip(f"Omniglot not prepared: {e}")


def fixed_batch_losses(learner, episodes, steps):
    """The loss of each of `steps` train steps on the same meta-batch, each read alone."""
    losses = []
    for _ in range(steps):
        for metric in learner.metrics:  # trackers average over steps: reset before each
            metric.reset_state()
        losses.append(float(learner.train_step(episodes)["loss"]))
    return losses
