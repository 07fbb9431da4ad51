"""tf_meta: meta-learning for TensorFlow/Keras, from episodes to a TF Serving export.

Episode -> data (sources, sampling, pipeline) -> MetaLearner (algorithms) -> export.

Importing tf_meta registers every learner with Keras's serialisation, so
`keras.models.load_model("m.keras")` finds them after a plain `import tf_meta`. The import
holds back TensorFlow's native start-up lines (`tf_meta.console`), CUDA's probe on a
machine without a GPU included: the `tf-meta` command imports this package first.
"""

from tf_meta import console

with console.without_start_up_noise():
    import tensorflow as tf

    from tf_meta.algorithms import ALGORITHMS, MetaLearner, build_learner
    from tf_meta.data import make_episode_dataset
    from tf_meta.episode import Episode

    tf.config.list_physical_devices()  # CUDA's probe (cuInit) reports here, not at a first op
from tf_meta.version import VERSION as __version__  # noqa: F401 - the package version

__all__ = ["ALGORITHMS", "Episode", "MetaLearner", "build_learner", "make_episode_dataset"]
