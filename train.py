"""Meta-trains a tf_meta learner, evaluates it on fixed test episodes, exports it for TF Serving.

Intentionally short: flags in, one library call (`tf_meta.experiment`), its report out; the
library never reads FLAGS. The flags are generated from `RunConfig` and from the
hyperparameters each algorithm declares; flags left unset take the algorithm's published
protocol (tf_meta/protocols.py).

  python train.py --algo=protonet                 # Omniglot, vinyals split, paper protocol
  python train.py --algo=maml --steps=2000        # 5-way 1-shot MAML, exact second order
  python train.py --flagfile=runs/protonet/flags.txt --ways=20 --eval_only
"""

import contextlib
import os
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# TensorFlow's native start-up lines: written to the stderr file descriptor before absl's
# logging is set up, whatever TF_CPP_MIN_LOG_LEVEL says (twice: two libraries start).
START_UP_NOISE = re.compile(
    r"(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard)\.cc:"
    r"|E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow)")


@contextlib.contextmanager
def without_start_up_noise():
    """Holds back what native code writes to stderr meanwhile, then passes on every line
    but TensorFlow's start-up notices (START_UP_NOISE): a real error still shows."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if not START_UP_NOISE.match(line):
                    sys.stderr.write(line)


with without_start_up_noise():
    import tensorflow as tf
    from absl import app, flags, logging

    from tf_meta import config as run_config
    from tf_meta import experiment, training

    tf.config.list_physical_devices()  # CUDA's probe (cuInit) reports here, not mid-run

FLAGS = flags.FLAGS
DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
          str: flags.DEFINE_string}
SETTINGS = run_config.flag_definitions()
for setting in SETTINGS:
    if setting.choices:
        flags.DEFINE_enum(setting.name, setting.default, setting.choices, setting.help)
    else:
        DEFINE[setting.type](setting.name, setting.default, setting.help)
flags.DEFINE_string("model_dir", None, "checkpoints, TensorBoard logs, flags.txt, results JSON "
                    "(default: runs/<algo>)")
flags.DEFINE_bool("eval_only", False, "skip training: restore model_dir's checkpoint, evaluate")
flags.DEFINE_bool("overwrite", False, "replace the run model_dir holds (its checkpoints, logs, "
                  "flags.txt and results), whatever its settings; without it a folder holding "
                  "a run with other settings is refused")


HELP = {"--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml"}


def parse_flags(argv):
    """absl's parser, with flag errors as the one-line `train.py: error:` of every bad input
    and exit status 0 after a help flag (absl's own is 1)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"train.py: error: {e}")
    except SystemExit as e:
        if e.code == 1 and HELP & set(argv[1:]):
            sys.exit(0)
        raise


def main(argv):
    if len(argv) > 1:
        sys.exit(f"train.py: error: unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        config = run_config.RunConfig.from_settings(
            **{setting.name: FLAGS[setting.name].value for setting in SETTINGS})
        if FLAGS.model_dir == "":
            raise ValueError("--model_dir is empty: name a folder, or leave the flag out for "
                             "runs/<algo>")
        workdir = FLAGS.model_dir or os.path.join("runs", config.algo)
        if FLAGS.eval_only:
            result = experiment.evaluate(config, workdir)
        else:
            result = experiment.train_and_evaluate(config, workdir, overwrite=FLAGS.overwrite)
    except (ValueError, OSError, training.Diverged) as e:
        sys.exit(f"train.py: error: {e}")
    if result is not None:  # None: a worker other than the chief
        print("\n".join(result.lines))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
