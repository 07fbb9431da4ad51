"""The clock of benchmarks/time_to_accuracy.py: when a run's validation accuracy reaches marks.

    clock = ValidationClock(top_mark=98, started=time.monotonic())
    experiment.train_and_evaluate(config, workdir, callbacks=[clock])
    crossings(clock.points, [95, 97, 98])   # {95: {"step": 300, ...}, 97: ..., 98: None}

A point is one validation run of the library's `fit` (Keras calls on_test_begin and
on_test_end around it, then on_epoch_end with its "val_accuracy"), as a dict:
  step              the meta-iteration validated (the optimizer's step count)
  accuracy          validation accuracy in [0, 1], as the run logs it
  train_seconds     since fit began (on_train_begin), less the time of every validation
                    run so far: meta-steps, the first call's trace and the checkpoints
  total_seconds     since `started` (the caller's start, e.g. its process's), all included
  validation_seconds  this validation run's own time
Points are taken at the end of a validation interval, after the run's checkpoint of that
step: its time is training's.
"""

import time

import keras

# A float32 mean over the validation queries can land one rounding step below the mark it
# equals (14,550 of 15,000 right is 97%, which float32 may hold as 0.96999997).
TOLERANCE = 1e-6


def reached(accuracy, mark):
    """Whether validation `accuracy` (in [0, 1]) reaches `mark` (in %)."""
    return accuracy >= mark / 100 - TOLERANCE


def crossings(points, marks):
    """mark -> the first of `points` (dicts with "accuracy", in step order) reaching it, or
    None: no point reached it (never extrapolated from the curve)."""
    return {mark: next((p for p in points if reached(p["accuracy"], mark)), None)
            for mark in marks}


class ValidationClock(keras.callbacks.Callback):
    """Notes each validation's point (the module docstring's); stops training once accuracy
    reaches `top_mark` (%) or `max_seconds` have passed since `started`.

    The budget is checked at every `fit` epoch's end (a run's checkpoint interval), so a
    run stops at the first interval's end after it: up to one interval late.

    Args:
      top_mark: the highest mark, in %: reaching it reaches every mark.
      started: time.monotonic() at the start of the total clock.
      max_seconds: the budget on the total clock; None: none.
      report: called with each point as it is taken.

    Attributes:
      points: the points, in step order.
      step: the step of the latest interval's end.
      stopped: why this clock stopped training ("every mark reached", "--max_minutes=...
        spent"), or None.
    """

    def __init__(self, top_mark, started, max_seconds=None, report=None):
        super().__init__()
        self.top_mark, self.started, self.max_seconds = top_mark, started, max_seconds
        self.report = report or (lambda point: None)
        self.points, self.stopped, self.step = [], None, 0

    def on_train_begin(self, logs=None):
        self.train_began, self.validating = time.monotonic(), 0.0

    def on_test_begin(self, logs=None):
        self.validation_began = time.monotonic()

    def on_test_end(self, logs=None):
        self.validated = time.monotonic() - self.validation_began
        self.validating += self.validated

    def on_epoch_end(self, epoch, logs=None):
        now, logs = time.monotonic(), logs or {}
        self.step = int(self.model.optimizer.iterations.numpy())
        if "val_accuracy" in logs:
            point = {"step": self.step, "accuracy": float(logs["val_accuracy"]),
                     "train_seconds": round(now - self.train_began - self.validating, 2),
                     "total_seconds": round(now - self.started, 2),
                     "validation_seconds": round(self.validated, 2)}
            self.points.append(point)
            self.report(point)
            if reached(point["accuracy"], self.top_mark):
                self._stop("every mark reached")
        if self.max_seconds is not None and now - self.started >= self.max_seconds:
            self._stop(f"--max_minutes={self.max_seconds / 60:g} spent")

    def _stop(self, why):
        if self.stopped is None:
            self.stopped, self.model.stop_training = why, True
