"""tf_meta: meta-learning for TensorFlow/Keras, from episodes to a TF Serving export.

Episode -> data (sources, sampling, pipeline) -> MetaLearner (algorithms) -> export.

The public names are imported on first use (PEP 562), so `import tf_meta.cli` (the
`tf-meta` command) does not load TensorFlow before it has set up its output: a command's
`--help` answers at once, and TensorFlow's native start-up lines can be held back
(`tf_meta.console`).
"""

import importlib

from tf_meta.version import VERSION as __version__  # noqa: F401 - the package version

_PUBLIC = {"ALGORITHMS": "tf_meta.algorithms", "MetaLearner": "tf_meta.algorithms",
           "build_learner": "tf_meta.algorithms", "make_episode_dataset": "tf_meta.data",
           "Episode": "tf_meta.episode"}  # name -> the module defining it

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tf_meta' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_PUBLIC])
