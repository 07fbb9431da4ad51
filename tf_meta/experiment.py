"""A run as one library call: data, learner, resumable fit, evaluation ± CI, result, export.

    config = RunConfig(algo="maml", steps=2000)
    result = experiment.train_and_evaluate(config, "runs/maml")
    print("\\n".join(result.lines))

`train.py` is a thin shell over `train_and_evaluate` and `evaluate` (flax's
`train_and_evaluate(config, workdir)`). The run folder (`workdir`) holds `flags.txt` (the
config, replayable with `train.py --flagfile`), `checkpoints/`, TensorBoard `logs/` and the
result JSON `test_<N>way_<K>shot.json` (`-2`, `-3`, ... for evaluations with other settings).
The folder is a contract (`run_folder`): only the run it holds goes on in it. The run folder
and the export folders may be on any file system TensorFlow has (gs://, ram://, ...): every
read and write goes through tf.io.gfile.
"""

import json
import math
import os
import time
from typing import NamedTuple, Optional

import keras
import tensorflow as tf

from tf_meta import (data, datasets, distribute, evaluation, export, files, run_folder,
                     training)
from tf_meta.algorithms import build_learner
from tf_meta.version import VERSION, source_commit


class Result(NamedTuple):
    """What a run produced.

    Fields:
      scores: the result JSON's content: accuracy (mse for regression), ci95, episodes,
        the learner's extra metrics, the config's summary, train_seconds.
      path: the result JSON.
      export: the SavedModel version folder written, or None.
      adapted_export: the adapted learner's version folder, or None.
      lines: the run's report, one line each (train.py prints them).
    """

    scores: dict
    path: str
    export: Optional[str]
    adapted_export: Optional[str]
    lines: tuple


def make_learner(config, input_shape):
    """The built learner `config` describes, over inputs of `input_shape`.

    The dataset's prescribed network when it has one (sinusoid: the MAML paper's MLP), else
    the algorithm's default backbone with a head of `train_ways` where it has one.
    """
    dataset = datasets.DATASETS[config.dataset]
    regression = config.task == "regression"
    return build_learner(config.algo, input_shape, ways=1 if regression else config.train_ways,
                         backbone=dataset.backbone() if dataset.backbone else None,
                         network=config.network, regression=regression,
                         precision=config.precision, **config.hyperparameters)


def compile_learner(learner, config, jit_compile=False):
    """Compiles `learner` with its meta-optimizer at `config`'s rates; returns it.

    XLA is off unless asked for: on a CPU it made MAML 16-18x slower (docs/PERFORMANCE.md).
    """
    learner.compile(optimizer=learner.meta_optimizer(
        config.meta_lr, config.steps, config.lr_decay_every, config.lr_decay_rate),
        jit_compile=jit_compile)
    return learner


def train_and_evaluate(config, workdir, overwrite=False, callbacks=()):
    """Trains (resuming from `workdir`'s checkpoints), evaluates and exports.

    Everything that can fail on bad input (paths, data, episode sizes, the support folder
    of `export_adapted`, a run folder holding another run: `run_folder.check`) is checked
    before anything is written. `overwrite` replaces a run `workdir` holds, whatever its
    settings (the report's first line says what was removed). `callbacks`: more Keras
    callbacks for the training's `fit` (after the run's own; e.g. one that times each
    validation, benchmarks/time_to_accuracy.py); one that stops training early leaves the
    run evaluated and exported at the step it stopped at.

    Returns:
      Result, or None on a worker other than the chief (which writes results and exports).

    Raises:
      ValueError, OSError: bad input, before any training.
      training.Diverged: the loss became NaN or Inf; nothing is evaluated or exported.
    """
    return _run(config, workdir, train=True, overwrite=overwrite, callbacks=callbacks)


def evaluate(config, workdir):
    """Restores `workdir`'s newest checkpoint, evaluates and exports; no training.

    `flags.txt` is left as the training run wrote it. Returns and raises as
    `train_and_evaluate` (ValueError when `workdir` holds no checkpoint).
    """
    return _run(config, workdir, train=False)


def _run(config, workdir, train, overwrite=False, callbacks=()):
    config = config.with_data_settings()  # a folder's image size, splits, episode sizes
    keras.utils.set_random_seed(config.seed)  # before the learner is built: seeds its init
    strategy = distribute.make_strategy(config.strategy, config.cpu_replicas)
    with strategy.scope():
        learner, streams, support = _prepare(config, workdir, strategy, train, overwrite)
    model_dir = distribute.worker_directory(strategy, workdir)
    tf.io.gfile.makedirs(model_dir)
    with run_folder.lock(model_dir):
        return _locked_run(config, workdir, model_dir, strategy, learner, streams, support,
                           train, overwrite, callbacks)


def _locked_run(config, workdir, model_dir, strategy, learner, streams, support, train,
                overwrite, callbacks=()):
    chief = distribute.is_chief(strategy)
    lines = []
    if run_folder.check(config, workdir, train, overwrite) and chief:  # again, locked
        lines.append(run_folder.replace(workdir))
    checkpoints = os.path.join(model_dir, "checkpoints")
    start = time.time()
    if train:
        with strategy.scope():
            compile_learner(learner, config)
            restored = training.Checkpoints(learner, checkpoints)
            restored.restore()  # raises, before anything is written, unless they read back
        if chief:  # --eval_only runs don't replace the run's flags
            files.write_whole(os.path.join(workdir, run_folder.FLAGS_FILE),
                              config.to_flags(model_dir=workdir))
        with strategy.scope():
            training.fit(learner, streams.train, checkpoints, config.steps,
                         config.checkpoint_every, config.eval_every, validation=streams.val,
                         callbacks=[keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
                                    *callbacks],
                         restored=restored)
    else:
        training.restore_for_evaluation(learner, checkpoints)
    if not chief:
        return None
    train_seconds = time.time() - start
    scores, score_lines = _evaluate(config, learner, streams)
    lines += score_lines
    scores["train_seconds"] = round(train_seconds, 1)
    kind = f"{config.dataset}" if config.task == "regression" else f"{config.ways}way"
    stem = f"test_{kind}_{config.shots}shot"
    path = run_folder.result_path(workdir, stem, config.summary())
    files.write_whole(path, json.dumps(scores, indent=2))
    if os.path.basename(path) != f"{stem}.json":
        lines.append(f"wrote {path} ({stem}.json holds an evaluation with other settings)")
    exported = adapted = None
    if config.export_dir:
        exported = export.export_learner(learner, config.export_dir, streams.input_shape,
                                         metadata=_export_metadata(config, scores),
                                         transductive=config.serve_transductive,
                                         image_contract=streams.image_contract)
        lines.append(f"exported SavedModel to {exported}")
    if support is not None:
        images, labels, class_names = support
        adapted = export.export_adapted(learner, images, labels, config.export_dir + "_adapted",
                                        metadata={**_export_metadata(config, scores),
                                                  "support": config.export_adapted},
                                        transductive=config.serve_transductive,
                                        image_contract=streams.image_contract,
                                        class_names=class_names)
        lines.append(f"exported the adapted learner to {adapted}")
    return Result(scores, path, exported, adapted, tuple(lines))


def _export_metadata(config, scores):
    """What an export records of its run: algorithm, test scores, flags, tf_meta version and
    the git commit of its code (None when not run from a checkout)."""
    return {"algo": config.algo, "test": scores, "flags": config.to_flags().splitlines()[1:],
            "tf_meta_version": VERSION, "commit": source_commit()}


def _prepare(config, workdir, strategy, train, overwrite):
    """(learner, EpisodeStreams, adapted support or None): every check on bad input."""
    replicas = strategy.num_replicas_in_sync
    if config.meta_batch_size % replicas:
        raise ValueError(f"--meta_batch_size={config.meta_batch_size} does not split evenly "
                         f"over the {replicas} replicas of --strategy={config.strategy}")
    adapted_dir = config.export_dir + "_adapted" if config.export_adapted else ""
    for path in (workdir, config.export_dir, adapted_dir):
        if path:
            files.check_writable(path)
    run_folder.check(config, workdir, train, overwrite)  # early: before loading the data
    if not train and not training.has_checkpoint(os.path.join(workdir, "checkpoints")):
        raise ValueError(f"evaluating (--eval_only, tf-meta evaluate or export) needs a "
                         f"trained run in --model_dir={workdir} (no checkpoint there): train "
                         "first, or name the run's folder")
    streams = datasets.streams(config)
    _check_meta_batch_fits(config, streams.input_shape)
    learner = make_learner(config, streams.input_shape)
    support = _adapted_support(config, learner, streams) if config.export_adapted else None
    return learner, streams, support


# What one training pixel costs at the least: the meta-batch in use and the one tf.data
# prefetches (>= 1 byte a pixel each: uint8 images), and the learner's float32 input.
BYTES_PER_PIXEL = 2 * 1 + 4


def _check_meta_batch_fits(config, input_shape):
    """Refuses a meta-batch whose training images alone exceed the machine's memory: a lower
    bound on what training needs (ProtoNet's 20,000 segfaulted, rc 139, on 24 GiB)."""
    images = config.meta_batch_size * config.train_ways * (config.train_shots +
                                                           config.train_query_shots)
    needed = images * math.prod(input_shape) * BYTES_PER_PIXEL
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory:
        raise ValueError(f"--meta_batch_size={config.meta_batch_size}: one meta-batch of "
                         f"training episodes is {images:,} images, which need at least "
                         f"{needed / 2**30:.1f} GiB (in use, prefetched and as the float32 "
                         f"input), more than this machine's {memory / 2**30:.1f} GiB of memory")


def _adapted_support(config, learner, streams):
    """(support images, labels, class names) for `export_adapted`: a class-folder tree,
    read through the training source's image contract, or 'test_episode'."""
    if config.export_adapted == "test_episode":
        episode = next(iter(streams.test))
        return episode.support_x[0], episode.support_y[0], None
    contract = streams.image_contract or data.ImageContract(*streams.input_shape)
    if contract.height != contract.width:
        raise ValueError(f"--export_adapted reads square images; the learner takes "
                         f"{contract.input_shape}")
    source = data.folder(config.export_adapted, image_size=contract.height,
                         channels=contract.channels, invert=contract.invert)
    if source.num_classes > learner.max_ways:
        raise ValueError(f"--export_adapted={config.export_adapted} has {source.num_classes} "
                         f"classes, more than the {learner.max_ways}-way head")
    return (*source.labelled_examples(), source.names)


def _evaluate(config, learner, streams):
    """(scores dict, report lines): accuracy ± CI and the learner's declared extra metrics."""
    scores = evaluation.evaluate_episodes(learner, streams.test)
    if config.task == "regression":
        score = (f"MSE {config.dataset} {config.shots}-shot: {scores['mse']:.3f} ± "
                 f"{scores['ci95']:.3f}")
    else:
        score = (f"accuracy {config.ways}-way {config.shots}-shot: "
                 f"{100 * scores['accuracy']:.2f} ± {100 * scores['ci95']:.2f}%")
    lines = [f"test {score} (95% CI, {scores['episodes']} episodes)"]
    if learner.answers_queries_together() and not config.serve_transductive:
        served = evaluation.evaluate_episodes(learner, streams.test, each_on_its_own=True)
        scores["served_accuracy"] = {k: served[k] for k in ("accuracy", "ci95")}
        lines.append(f"served, each query on its own: {100 * served['accuracy']:.2f} ± "
                     f"{100 * served['ci95']:.2f}% (the test's answers: --serve_transductive)")
    for name in learner.EXTRA_METRICS:
        metric = evaluation.EXTRA_METRICS[name]
        try:
            if streams.test_source is None:
                raise ValueError(f"--dataset={config.dataset} has no test classes to draw from")
            scores[name] = metric.compute(learner, streams.test_source, config.eval_episodes,
                                          config.eval_seed)
            lines.append(metric.describe(scores[name]))
        except ValueError as e:
            lines.append(f"{name.replace('_', ' ')} skipped: {e}")
    scores.update(config.summary())
    return scores, lines
