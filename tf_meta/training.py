"""Meta-training that survives being killed: checkpoints, resume position, divergence stop.

A run is a pure function of its flags: the learner's initial weights come from the seed,
and training episode i is drawn from the stateless seed (seed, i) (`data.episode_stream`).
So a checkpoint needs only the learner's variables and the optimizer's (whose `iterations`
is the step); the episode stream position is step × meta-batch size, recomputed on
restart. `fit` restores the newest readable checkpoint, restarts the stream there and
trains to the requested step, giving the same weights as a run never interrupted.

Checkpoints are `tf.train.CheckpointManager` checkpoints: TensorFlow writes the data files
first and then replaces the `checkpoint` index file atomically, so a kill mid-write leaves
the previous checkpoint as the latest. If the newest one is unreadable anyway (a damaged
disk, a copy cut short), the previous one is used; if the index itself is damaged, the
checkpoint files it named are found on disk (and left there: the manager, which no longer
knows them, deletes only the checkpoints it writes from then on). Checkpoint files none of
which reads back stop the run (never a silent restart at step 0 over them), and a checkpoint
whose variables have other shapes than the learner's is an error, never a partial restore.

Only finite weights are checkpointed: a non-finite weight (NaN or Inf, which a finite loss
can hide: ReLU(NaN) = 0) stops training like a non-finite loss, and evaluation refuses a
checkpoint holding one.
"""

import math
import os

import keras
import tensorflow as tf
from absl import logging

from tf_meta import files, progress


class Diverged(RuntimeError):
    """The training loss or a weight became NaN or Inf; the last good checkpoint is kept."""


class Checkpoints:
    """The learner's and its optimizer's variables under `directory`, newest `keep` kept.

    What is saved of the learner: `_learner_objects`.

    Args:
      learner: a compiled MetaLearner (its optimizer is built here if it is not).
      directory: the checkpoint folder (created on the first save).
      keep: how many checkpoints to keep (>= 2, so one damaged file is survivable).
    """

    def __init__(self, learner, directory, keep=2):
        if not learner.optimizer.built:  # restore needs the slots to exist
            learner.optimizer.build(learner.trainable_variables)
        self.learner = learner
        self.checkpoint = tf.train.Checkpoint(optimizer=learner.optimizer,
                                              **_learner_objects(learner))
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)

    @property
    def step(self):
        """The optimizer's step count (python int)."""
        return int(self.learner.optimizer.iterations.numpy())

    def restore(self):
        """Restores the newest readable checkpoint; returns its step (0 if there is none).

        Raises:
          ValueError: checkpoint files exist but none reads back, or they do not fit.
        """
        directory = self.manager.directory
        paths = _checkpoint_paths(directory, self.manager.checkpoints)
        if not paths:
            return 0
        restored = _restore_newest(self.checkpoint, paths, self.learner.variables)
        if restored is None:
            raise ValueError(f"no checkpoint in {directory} reads back (newest: {paths[-1]}): "
                             "nothing was trained over them; move them away to start afresh")
        return self.step

    def save(self):
        """Writes a checkpoint numbered by the current step; returns its path.

        Raises:
          OSError: one line, when the file system refuses (disk full, read-only); the
            previous checkpoints stay as they were (the index is replaced last).
        """
        try:
            return self.manager.save(checkpoint_number=self.step)
        except (OSError, tf.errors.OpError) as e:
            raise OSError(f"cannot write a checkpoint in {self.manager.directory}: "
                          f"{files.error_cause(e)}") from None


class CheckpointEvery(keras.callbacks.Callback):
    """Saves `checkpoints` at every epoch end, unless the loss or a weight is NaN or Inf.

    A non-finite loss stops training at the end of that batch; non-finite weights (checked
    before every save) stop it at the end of the epoch. That epoch's checkpoint is then
    skipped, so the newest checkpoint is the last good one; `diverged_at` holds the step
    and `diverged` what was found.
    """

    def __init__(self, checkpoints):
        super().__init__()
        self.checkpoints = checkpoints
        self.diverged_at = None
        self.diverged = None

    def _stop(self, what):
        if self.diverged_at is None:
            self.diverged_at, self.diverged = self.checkpoints.step, what
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop("the training loss became NaN or Inf")

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged_at is None:
            bad = non_finite(self.checkpoints.learner.variables)
            if bad:
                self._stop(f"weights became NaN or Inf ({variable_names(bad)}) while the loss "
                           "stayed finite")
            else:
                self.checkpoints.save()


def fit(learner, train_stream, directory, steps, checkpoint_every, eval_every,
        validation=None, callbacks=(), restored=None, verbose=1):
    """Meta-trains `learner` to `steps` optimizer steps, resuming from `directory`.

    Args:
      learner: a compiled MetaLearner.
      train_stream: start -> tf.data.Dataset of meta-batches beginning at meta-batch `start`
        of the run's stream (so a resumed run sees the episodes it has not yet seen).
      directory: checkpoint folder (`Checkpoints`).
      steps: the step to end at; a multiple of eval_every.
      checkpoint_every: steps between checkpoints; divides eval_every.
      eval_every: steps between validation runs (on `validation`, if given).
      validation: optional tf.data.Dataset of validation meta-batches.
      callbacks: more Keras callbacks (TensorBoard, ...).
      verbose: report progress in meta-steps (`progress.Progress`); 0: silent.
      restored: the `Checkpoints` of `directory`, already restored (a caller that must know
        the checkpoints read back before it writes anything); None: restored here.

    Returns:
      The step training started from (0 for a fresh run).

    Raises:
      Diverged: the loss became NaN or Inf; the newest checkpoint is the last good one.
    """
    check_schedule(steps, eval_every, checkpoint_every)
    checkpoints = restored or Checkpoints(learner, directory)
    start = checkpoints.step if restored else checkpoints.restore()
    if start % checkpoint_every:
        raise ValueError(f"the checkpoint in {directory} is at step {start}, not a multiple of "
                         f"--checkpoint_every={checkpoint_every}: resume with the run's flags")
    guard = CheckpointEvery(checkpoints)
    if start < steps:
        learner.fit(train_stream(start=start), steps_per_epoch=checkpoint_every,
                    initial_epoch=start // checkpoint_every, epochs=steps // checkpoint_every,
                    validation_data=validation, validation_freq=eval_every // checkpoint_every,
                    callbacks=[guard, *([progress.Progress(steps)] if verbose else []),
                               *callbacks],
                    verbose=0)  # Keras's bar counts checkpoint intervals as epochs
    if guard.diverged_at is not None:
        last = checkpoints.manager.latest_checkpoint
        kept = (f"the last good checkpoint (step {_step_of(last)}) is kept in {directory}"
                if last else "no checkpoint had been written")
        raise Diverged(f"{guard.diverged} at step {guard.diverged_at}; training stopped, "
                       f"{kept}")
    return start


def non_finite(variables):
    """The floating-point variables among `variables` holding a NaN or Inf."""
    return [v for v in variables if tf.as_dtype(v.dtype).is_floating
            and not bool(tf.reduce_all(tf.math.is_finite(v)))]


def variable_names(variables, shown=3):
    """'a, b, c and 2 more': the variables' paths, for one-line messages."""
    names = [getattr(v, "path", v.name) for v in variables]  # Keras 3 variables: .path
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _step_of(path):
    return int(path.rsplit("-", 1)[1]) if path else 0


def _learner_objects(learner):
    """The learner's part of a checkpoint: the model, and every variable by its index.

    tf.train.Checkpoint only follows a Keras layer's variable and layer attributes, not
    layers or variables kept in lists or tuples: reached from the model alone, SNAIL's
    attention and TC blocks and Reptile's inner Adam moments were missing (a resumed or
    `--eval_only` run silently used fresh values for them). The model stays for
    checkpoints written before the list, which restore through it.
    """
    return dict(model=learner, variables=list(learner.variables))


def _checkpoint_paths(directory, indexed):
    """The checkpoints of `directory`, oldest first: those its index names, else (a damaged
    or missing index) those whose files are on disk."""
    found = [p[:-len(".index")] for p in tf.io.gfile.glob(os.path.join(directory, "ckpt-*.index"))]
    if set(indexed) >= set(found):
        return list(indexed)
    return sorted(set(indexed) | set(found), key=_step_of)


def _saved_shapes(path):
    """name -> shape of each variable checkpoint `path` holds, read by the checkpoint reader
    itself: tf.train.list_variables first asks whether `path` is a folder, which ram://
    answers yes for any prefix of a file's name ("ckpt-4" of "ckpt-4.index")."""
    return tf.compat.v1.train.NewCheckpointReader(path).get_variable_to_shape_map()


def _check_fits(path, saved, variables):
    """Raises ValueError if checkpoint `path`, whose variables have the shapes `saved`
    (`_saved_shapes`), holds a learner variable of another shape.

    Variables are saved by index (`_learner_objects`); a checkpoint of another learner
    (other ways, another algorithm) would otherwise restore in part.
    """
    for i, variable in enumerate(variables):
        shape = saved.get(f"variables/{i}/.ATTRIBUTES/VARIABLE_VALUE")
        if shape is not None and list(shape) != variable.shape.as_list():
            raise ValueError(f"checkpoint {path} does not fit this learner: variable {i} "
                             f"({variable_names([variable])}) is {list(shape)} there and "
                             f"{variable.shape.as_list()} here; it was trained with other "
                             "settings")
    indexed = sum(1 for key in saved if key.startswith("variables/"))
    if indexed and indexed != len(variables):
        raise ValueError(f"checkpoint {path} does not fit this learner: it holds {indexed} "
                         f"variables, the learner {len(variables)}; it was trained with other "
                         "settings")


def _restore_newest(checkpoint, paths, variables):
    """Restores the newest of `paths` that reads back whole; returns it (None if none does).

    Raises:
      ValueError: a readable checkpoint does not fit `variables` (`_check_fits`).
    """
    for path in reversed(paths):
        try:
            saved = _saved_shapes(path)
        except Exception as e:  # noqa: BLE001 - a damaged file raises any of several types
            logging.warning("checkpoint %s is unreadable (%s); trying an older one",
                            path, str(e).splitlines()[0])
            continue
        _check_fits(path, saved, variables)
        try:
            checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
            return path
        except Exception as e:  # noqa: BLE001 - as above
            logging.warning("checkpoint %s is unreadable (%s); trying an older one",
                            path, str(e).splitlines()[0])
    return None


def _legacy_weights(directory):
    """The weights file a run folder from before resumable training holds instead of
    checkpoints, or None."""
    path = os.path.join(directory, "last.weights.h5")
    return path if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path) else None


def check_schedule(steps, eval_every, checkpoint_every):
    """Raises ValueError unless checkpoint_every divides eval_every and that divides steps."""
    if steps % eval_every:
        raise ValueError(f"--steps={steps} is not a multiple of --eval_every={eval_every}")
    if eval_every % checkpoint_every:
        raise ValueError(f"--checkpoint_every={checkpoint_every} does not divide "
                         f"--eval_every={eval_every}")


def restore_for_evaluation(learner, directory):
    """Loads the newest readable checkpoint's learner variables (no optimizer needed).

    Run folders of tf_meta 0.1 before resumable training hold `last.weights.h5` instead,
    which is loaded when there is no checkpoint.

    Raises:
      ValueError: there is no checkpoint in `directory`.
    """
    legacy = None if latest_step(directory) else _legacy_weights(directory)
    if legacy:
        learner.load_weights(legacy)
        return None
    checkpoint = tf.train.Checkpoint(**_learner_objects(learner))
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=None)
    path = _restore_newest(checkpoint, _checkpoint_paths(directory, manager.checkpoints),
                           learner.variables)
    if not path:
        raise ValueError(f"no readable checkpoint in {directory}: train first (without "
                         "--eval_only)")
    bad = non_finite(learner.variables)
    if bad:
        raise ValueError(f"checkpoint {path} holds NaN or Inf weights ({variable_names(bad)}): "
                         "nothing is evaluated or exported from it")
    return _step_of(path)


def has_checkpoint(directory):
    """Whether `directory` holds a checkpoint `restore_for_evaluation` can try."""
    return bool(latest_step(directory) or _legacy_weights(directory))


def latest_step(directory):
    """The step of the newest checkpoint file in `directory` (0: none), index or not."""
    paths = _checkpoint_paths(directory, [])
    return _step_of(paths[-1]) if paths else 0
