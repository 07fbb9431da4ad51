"""Training progress counted in meta-steps: a bar on a terminal, one line an interval in a log.

Keras's own bar counts "epochs" (here the checkpoint intervals `training.fit` hands to
`keras.Model.fit`) and redraws itself with escape codes even into a file, so runs show
this instead (`training.fit` passes verbose=0).
"""

import math
import time

import keras

from tf_meta import console


class Progress(keras.callbacks.Callback):
    """Reports meta-step `optimizer.iterations` of `steps`, with the latest metrics.

    On a terminal (`console.interactive`), a Keras progress bar over the meta-steps, and a
    line at each validation; elsewhere one line at the end of each interval (`fit`'s
    epoch: a checkpoint interval), e.g.

      step 200/1000  accuracy 0.8810  loss 0.4127  val_accuracy 0.8870  val_loss 0.3921  31 s,
      6.45 steps/s  (one line)

    Args:
      steps: the step training ends at.
      interactive: draw a bar; None: whether stdout is a terminal.
    """

    def __init__(self, steps, interactive=None):
        super().__init__()
        self.steps = steps
        self.interactive = console.interactive() if interactive is None else interactive
        self.bar = None

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self.first_step, self.start = self._step(), time.time()
        if self.interactive:
            self.bar = keras.utils.Progbar(self.steps, unit_name="step",
                                           stateful_metrics=["loss", "accuracy", "mse"])
            self.bar.update(self.first_step)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            shown = [(k, float(v)) for k, v in (logs or {}).items() if not k.startswith("val_")]
            self.bar.update(self._step(), values=shown)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.bar is None or any(k.startswith("val_") for k in logs):
            print(("\n" if self.bar is not None else "") + self.line(logs), flush=True)

    def line(self, logs):
        """The interval's line: step, metrics (validation ones when there was one), time."""
        step, seconds = self._step(), time.time() - self.start
        rate = (step - self.first_step) / seconds if seconds > 0 else math.nan
        metrics = "  ".join(f"{k} {float(v):.4f}" for k, v in logs.items())
        return f"step {step}/{self.steps}  {metrics}  {seconds:.0f} s, {rate:.2f} steps/s"
