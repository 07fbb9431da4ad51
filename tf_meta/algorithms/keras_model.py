"""KerasModel: a MetaLearner's Keras face: calls on episodes, compile, save/load, export.

Keras's conventions answer a batch of inputs with a model's outputs, compile a loss and
metrics, and serialise a model by its constructor arguments. A learner answers episodes,
computes its own loss and metrics, and is made of a backbone and hyperparameters; this
class says what each Keras entry point means for it, or refuses in one line.
"""

import os

import keras
import tensorflow as tf

from tf_meta.episode import Episode, as_episode

KERAS_SUFFIX = ".keras"


class KerasModel(keras.Model):
    """The Keras entry points of a MetaLearner (`base.MetaLearner` subclasses this).

    Reads from the learner: `backbone`, `regression`, `precision`, `SCALES_LOSS`,
    `batch_logits`, `metrics`,
    `meta_optimizer` with its META_OPTIMIZER arguments, `hyperparameter_values` and the
    NESTED_MODELS among its constructor arguments.
    """

    def __call__(self, *args, **kwargs):
        """Keras's __call__, an episode checked first, so that its ValueError stays one line
        (Keras wraps what `call` raises in paragraphs of context)."""
        if args and isinstance(args[0], (tuple, list, dict)):
            args = (self.checked_episode(args[0])[0], *args[1:])
        return super().__call__(*args, **kwargs)

    def call(self, inputs, training=False):
        """Query logits of episodes, or the backbone's output for a batch of inputs.

        Args:
          inputs: an Episode, or a tuple or dict of its fields (`as_episode`; query_y may
            be left out, no learner reads it): one episode (support_y [S], regression
            [S, 1]) -> query logits [Q, ways]; a meta-batch (support_y [B, S]) -> [B, Q,
            ways], as `predict`. Or a tensor or array [batch, *input_shape] -> the
            backbone's output (ProtoNet's embedding; what `summary()` describes).
          training: False answers as evaluation and the served model do.
        """
        if not isinstance(inputs, (tuple, list, dict)):
            return self.backbone(inputs, training=training)
        episode, batched = self.checked_episode(inputs)
        if batched:
            return self.answer(episode, training)
        return self.answer(Episode(*(None if t is None else t[None] for t in episode)),
                           training)[0]

    def checked_episode(self, inputs):
        """(Episode of tensors, whether it is a meta-batch) from what `call` takes.

        Raises:
          ValueError: one line, when the fields are not an episode's or support_y has
            neither an episode's rank ([S]; regression [S, 1]) nor a meta-batch's.
        """
        episode = as_episode(inputs)
        episode = Episode(*(None if t is None else tf.convert_to_tensor(t) for t in episode))
        rank, one = episode.support_y.shape.rank, 2 if self.regression else 1
        if rank not in (one, one + 1):
            target = ", 1" * self.regression
            raise ValueError(f"support_y must be [S{target}] (one episode) or [B, S{target}] "
                             f"(a meta-batch); got shape {episode.support_y.shape}")
        return episode, rank == one + 1

    def answer(self, episodes, training):
        """Query logits [B, Q, ways] of a meta-batch whose query_y may be None."""
        if episodes.query_y is None:  # left out for a prediction; no learner's logits read it
            episodes = episodes._replace(query_y=tf.zeros(tf.shape(episodes.query_x)[:2], tf.int32))
        return self.batch_logits(episodes, training)

    def fit(self, *args, shuffle=False, **kwargs):
        """Keras's fit, with shuffle off by default: episode datasets come shuffled (seeded
        episodes), and for a dataset Keras ignores shuffle=True and warns that it does."""
        return super().fit(*args, shuffle=shuffle, **kwargs)

    def compile(self, optimizer=None, loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, **kwargs):
        """Keras's compile with the learner's own loss, metrics and meta-optimizer.

        Args:
          optimizer: None (the default): `self.meta_optimizer(**META_OPTIMIZER)`, the
            algorithm's outer update (Reptile: SGD(ε) on θ − φ, ε annealed linearly to 0
            over META_OPTIMIZER's `steps`, after which θ no longer moves; for another run
            length pass `learner.meta_optimizer(meta_lr, steps, decay_every, decay_rate)`).
            An optimizer given is used as it is: for Reptile, Adam on the θ − φ direction
            is the paper's own variant (Nichol et al. 2018; openai.com/research/reptile).
          loss, loss_weights, metrics, weighted_metrics: refused. The learner computes its
            own loss (`query_loss`) and metrics (loss, accuracy); Keras would ignore them.
          **kwargs: Keras's run_eagerly, steps_per_execution, jit_compile ("auto": off on
            a CPU, where XLA made MAML 16-18x slower), auto_scale_loss.

        Raises:
          ValueError: one line naming the refused arguments.
        """
        given = [name for name, value in (("loss", loss), ("loss_weights", loss_weights),
                                          ("metrics", metrics),
                                          ("weighted_metrics", weighted_metrics))
                 if value is not None]
        if given:
            raise ValueError(f"compile() got {', '.join(given)}, which {type(self).__name__} "
                             "would ignore: it computes its own loss and metrics "
                             f"({', '.join(m.name for m in self.metrics)}); leave them out")
        if optimizer is None:
            optimizer = self.meta_optimizer(**self.META_OPTIMIZER)
        # float16: Keras wraps the optimizer in a LossScaleOptimizer, which divides the
        # update by the loss scale: only for a loss gradient (`scaled_loss`).
        kwargs.setdefault("auto_scale_loss", self.SCALES_LOSS)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """`compile` again on `keras.models.load_model`, with the saved optimizer (whose
        state loads after this), so `fit` continues where the saved learner stopped.

        Keras's own skips a model whose `compile` is overridden; this is its body.
        """
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)  # its variables, to load into

    def get_config(self):
        """What the learner is, for `save`: name, task kind, hyperparameters and the nested
        Keras serialisation of NESTED_MODELS (the backbone, its exact BatchNormalization
        layers included). Subclasses add their other constructor arguments."""
        return {"name": self.name, "regression": self.regression, "precision": self.precision,
                **self.hyperparameter_values(),
                **{key: keras.saving.serialize_keras_object(getattr(self, key))
                   for key in self.NESTED_MODELS}}

    @classmethod
    def from_config(cls, config):
        return cls(**{key: keras.saving.deserialize_keras_object(value)
                      if key in cls.NESTED_MODELS else value for key, value in config.items()})

    def save(self, filepath, overwrite=True, **kwargs):
        """Keras's save, whole or not at all (`save_whole`): a failed save leaves no file
        and an existing one unchanged. `keras.models.load_model(filepath)` gives the
        learner back, compiled as it was, in any process that imported tf_meta (which
        registers the learners with Keras)."""
        return save_whole(super().save, filepath, overwrite=overwrite, **kwargs)

    def export(self, filepath, *args, **kwargs):
        """Refused: Keras's export serves `call` on a batch of inputs, the backbone alone,
        not few-shot episodes. `tf_meta.export.export_learner` writes the episode signature;
        it sits a layer above the learners, so it is named here, not called."""
        del args, kwargs
        shape = (self.get_build_config() or {}).get("input_shape")
        shape = "input_shape" if shape is None else f"input_shape={tuple(shape[1:])}"
        raise ValueError(f"{type(self).__name__}.export() would serve the backbone alone, not "
                         f"episodes: use tf_meta.export.export_learner(learner, "
                         f"{os.fspath(filepath)!r}, {shape}) for the episode signature "
                         "(support_images, support_labels, query_images -> logits, "
                         "probabilities, classes)")


def save_whole(save, filepath, overwrite=True, **kwargs):
    """Runs Keras's `save(path, overwrite, **kwargs)` on a temporary `.keras` file beside
    `filepath`, then renames it over `filepath`: a reader (of a ModelCheckpoint's best
    file, say) sees the old file or the new one, never a 0-byte or half-written one.

    Keras opens the target before it serialises anything, so a learner it could not
    serialise left a 0-byte file where the user asked for one (and truncated a good one).
    File objects, unzipped folders, Hugging Face paths and a refused overwrite (Keras
    asks first) go to `save` as they are.

    Raises:
      ValueError: one line naming `filepath` and what Keras could not serialise.
      OSError: one line naming `filepath` and the file system's cause.
      The temporary file is removed either way.
    """
    path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
    if (path is None or not path.endswith(KERAS_SUFFIX) or path.startswith("hf://")
            or kwargs.get("zipped") is False
            or (not overwrite and tf.io.gfile.exists(path))):
        return save(filepath, overwrite=overwrite, **kwargs)
    temporary = path[:-len(KERAS_SUFFIX)] + ".partial" + KERAS_SUFFIX
    try:
        save(temporary, overwrite=True, **kwargs)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except (OSError, tf.errors.OpError) as e:
        raise OSError(f"cannot write {path}: {one_line(e)}") from None
    except (NotImplementedError, TypeError, ValueError) as e:
        raise ValueError(f"cannot save {path}: {one_line(e)}") from None
    finally:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)


def one_line(error):
    """The first sentence of an error's message, on one line (Keras's run to paragraphs)."""
    text = " ".join((getattr(error, "message", None) or str(error)).split())
    return text.split(". ")[0].rstrip(".") or type(error).__name__
