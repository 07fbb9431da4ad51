"""The run folder as a contract: a folder holds one run, and only that run goes on in it.

A run folder (`--model_dir`) records what produced it in `flags.txt`: every setting,
resolved, and the tf_meta version (`RunConfig.to_flags`). A run that trains, resumes or
evaluates in a folder holding a run must have the settings that shaped its weights
(`RunConfig.weight_settings`: algorithm, data, network, training episodes, meta-batch,
rates, seed, the algorithm's hyperparameters that shape training); `check` refuses any
difference in one line naming each, unless training was asked to `overwrite` (then `replace`
removes the old run and says what it removed). Free to differ: more `--steps` (a resume
goes on to them; Reptile's ε, annealed over `--steps`, then follows the new length), the
test episodes and their seed, test-time hyperparameters (MAML's and Reptile's test inner
steps, transductive test BatchNorm where training does not use it), validation and
checkpoint intervals, tasks in parallel, the data's location, the export folders and the
distribution strategy.

One process at a time per folder (`lock`: flock, which the kernel releases when the
holder dies, even by SIGKILL). Only a local folder can be locked: TF's file systems (gs://,
s3://, ...) have no lock, so on them keeping to one process per folder is the user's part.
A result is never overwritten by a different evaluation (`result_path`). Every read and
write goes through tf.io.gfile.
"""

import contextlib
import json
import os

import tensorflow as tf

from tf_meta import files, training
from tf_meta.config import RunConfig

FLAGS_FILE = "flags.txt"


def check(config, workdir, train, overwrite=False):
    """Refuses a run that may not go on in `workdir`; says whether `overwrite` replaces one.

    Returns:
      True when `workdir` holds a run that `replace` must remove first (train with
      `overwrite`), else False.

    Raises:
      ValueError: one line: the folder holds a run with other weight settings, or one from
        before `--protocol` under another protocol, or one already past `config.steps`.
    """
    path = os.path.join(workdir, FLAGS_FILE)
    if not tf.io.gfile.exists(path):
        return False
    if train and overwrite:
        return True
    with tf.io.gfile.GFile(path) as f:
        legacy = not any(line.startswith("--protocol=") for line in f)
    if legacy and config.protocol != "tf_meta":
        raise ValueError(f"{path} was written before --protocol existed and its run used "
                         "tf_meta's settings: add --protocol=tf_meta to resume or evaluate "
                         "it, or choose another --model_dir")
    theirs, ours = RunConfig.from_flags_file(path).weight_settings(), config.weight_settings()
    differing = sorted(name for name in theirs.keys() | ours.keys()
                       if theirs.get(name) != ours.get(name))
    if differing:
        shown = "; ".join(f"--{name}={theirs.get(name)} there, {ours.get(name)} here"
                          for name in differing[:4])
        more = f"; and {len(differing) - 4} more" if len(differing) > 4 else ""
        advice = ("choose another --model_dir, or pass --overwrite to replace that run" if train
                  else f"evaluate it with its own settings (--flagfile={path})")
        raise ValueError(f"--model_dir={workdir} holds a run with other settings ({shown}{more})"
                         f": {advice}")
    step = training.latest_step(os.path.join(workdir, "checkpoints"))
    if train and step > config.steps:
        raise ValueError(f"the run in {workdir} is at step {step}: --steps={config.steps} would "
                         f"train nothing; pass --steps >= {step} to go on, or evaluate it with "
                         "--eval_only")
    return False


def replace(workdir):
    """Removes the run in `workdir` (checkpoints, logs, flags.txt, results); returns a line
    saying what was removed."""
    step = training.latest_step(os.path.join(workdir, "checkpoints"))
    results = tf.io.gfile.glob(os.path.join(workdir, "test_*.json"))
    for name in ("checkpoints", "logs"):
        if tf.io.gfile.exists(os.path.join(workdir, name)):
            tf.io.gfile.rmtree(os.path.join(workdir, name))
    for path in [os.path.join(workdir, FLAGS_FILE), *results]:
        tf.io.gfile.remove(path)
    return (f"--overwrite: removed the run that was in {workdir} (checkpoints up to step {step}, "
            f"its logs, flags.txt and {len(results)} result file(s))")


@contextlib.contextmanager
def lock(directory):
    """Holds an exclusive lock on `directory` (which must exist) for the `with` block; a
    folder that is not local (`files.is_local`), or a system without flock, gives none.

    Raises:
      ValueError: another process holds it.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        fcntl = None
    if fcntl is None or not files.is_local(directory):  # TF's file systems have no lock
        yield
        return
    descriptor = os.open(files.local_path(directory), os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another process is running in --model_dir={directory}: wait "
                             "for it to end, or use another --model_dir") from None
        yield
    finally:
        os.close(descriptor)  # releases the lock


def result_path(workdir, stem, settings):
    """`<stem>.json` in `workdir`, or `<stem>-2.json`, ...: the first name not holding the
    result of an evaluation with other `settings` (a dict every result JSON includes)."""
    path, number = os.path.join(workdir, f"{stem}.json"), 1
    while tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            try:
                held = json.load(f)
            except ValueError:
                held = {}
        if {name: held.get(name) for name in settings} == settings:
            break
        number += 1
        path = os.path.join(workdir, f"{stem}-{number}.json")
    return path
