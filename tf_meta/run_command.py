"""`tf-meta train|evaluate|export` (and train.py): flags in, one library call, its report out.

  tf-meta train --algo=protonet                      # Omniglot, vinyals split, paper protocol
  tf-meta train --algo=maml --steps=2000             # 5-way 1-shot MAML, exact second order
  tf-meta evaluate --model_dir=runs/protonet --ways=20
  tf-meta export --model_dir=runs/protonet --export_dir=saved_models/protonet

The flags are generated from `RunConfig` and from the hyperparameters each algorithm
declares; flags left unset take the algorithm's published protocol (tf_meta/protocols.py).
The library never reads FLAGS: `main` turns them into a `RunConfig` for `tf_meta.experiment`.

The commands:
  train     meta-trains (resuming the run in --model_dir), evaluates on the fixed test
            episodes and exports (--export_dir, default saved_models/<algo>; '' skips it).
  evaluate  restores --model_dir's newest checkpoint and evaluates; exports only when
            --export_dir is given.
  export    restores, evaluates (an export records its test score) and exports.
evaluate and export read the run's flags from <model_dir>/flags.txt: only what changes
needs saying (flags given on the command line override it; `--flagfile` replaces it).
"""

import os
import sys

import tensorflow as tf  # its start-up lines held back by tf_meta/__init__, imported first
from absl import app, flags, logging

from tf_meta import config as run_config
from tf_meta import experiment, files, run_folder, training

COMMANDS = ("train", "evaluate", "export")
HELP = {"--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml"}
FLAGS = flags.FLAGS
DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
          str: flags.DEFINE_string}


def define_flags():
    """Defines the run's flags on absl's FLAGS (once a process); returns the RunConfig ones."""
    settings = run_config.flag_definitions()
    if "model_dir" in FLAGS:
        return settings
    for setting in settings:
        if setting.choices:
            flags.DEFINE_enum(setting.name, setting.default, setting.choices, setting.help)
        else:
            DEFINE[setting.type](setting.name, setting.default, setting.help)
    flags.DEFINE_string("model_dir", None, "checkpoints, TensorBoard logs, flags.txt, results "
                        "JSON (default: runs/<algo>)")
    flags.DEFINE_bool("eval_only", False, "skip training: restore model_dir's checkpoint, "
                      "evaluate (`tf-meta evaluate`)")
    flags.DEFINE_bool("overwrite", False, "replace the run model_dir holds (its checkpoints, "
                      "logs, flags.txt and results), whatever its settings; without it a folder "
                      "holding a run with other settings is refused")
    return settings


def run_flags(argv, command):
    """`argv` as absl's parser takes it: for evaluate and export given a --model_dir and no
    --flagfile, the run folder's flags.txt first (the command line's own flags come after,
    so they win); and a flag file on a remote file system (gs://...) read through
    tf.io.gfile into its flags, as absl opens flag files with `open` itself."""
    given = {}  # flag -> value, of --flag=value and --flag value
    for arg, following in zip(argv[1:], [*argv[2:], ""]):
        name, equals, value = arg.lstrip("-").partition("=")
        given[name] = value if equals else following
    if command != "train" and "flagfile" not in given and given.get("model_dir"):
        flags_file = os.path.join(given["model_dir"], run_folder.FLAGS_FILE)
        if tf.io.gfile.exists(flags_file):  # else the run's own check says what is missing
            argv = [argv[0], f"--flagfile={flags_file}", *argv[1:]]
    return [argv[0], *(flag for arg in argv[1:] for flag in _remote_flag_file(arg))]


def _remote_flag_file(arg):
    """[arg], or the flags of the remote flag file `--flagfile=<path>` names (its lines
    but comments and blanks, as absl reads a flag file)."""
    name, _, path = arg.partition("=")
    if name.lstrip("-") != "flagfile" or files.is_local(path):
        return [arg]
    try:
        with tf.io.gfile.GFile(path) as f:
            lines = [line.strip() for line in f.read().splitlines()]
    except (OSError, tf.errors.OpError) as e:
        raise flags.Error(f"cannot read --flagfile={path}: {files.error_cause(e)}") from None
    return [line for line in lines if line and not line.startswith(("#", "//"))]


def main(argv=None, command="train", prog="train.py", doc=__doc__):
    """Runs `command` (one of COMMANDS) with the flags in `argv` (default sys.argv; argv[0]
    is the program); `doc` heads the help. Exits: 0 done (or help), 1 on a one-line
    `<prog>: error:`."""
    argv = list(sys.argv if argv is None else argv)
    settings = define_flags()

    def parse(argv):  # absl's parser; errors as one line, 0 after a help flag
        if HELP & set(argv[1:]):
            print(doc + "\n" + (FLAGS.get_help() if "--helpfull" in argv
                                    else FLAGS.module_help(__name__)))
            sys.exit(0)
        try:
            return FLAGS(run_flags(argv, command))
        except flags.Error as e:  # run_flags' own too
            sys.exit(f"{prog}: error: {e}")

    def run(argv):
        if len(argv) > 1:
            sys.exit(f"{prog}: error: unexpected arguments: {argv[1:]}")
        logging.set_verbosity(logging.WARNING)
        values = {s.name: FLAGS[s.name].value for s in settings}
        if command == "evaluate" and not FLAGS["export_dir"].present:
            values["export_dir"] = ""  # evaluating exports nothing unless asked
        try:
            config = run_config.RunConfig.from_settings(**values)
            if FLAGS.model_dir == "":
                raise ValueError("--model_dir is empty: name a folder, or leave the flag out "
                                 "for runs/<algo>")
            workdir = FLAGS.model_dir or os.path.join("runs", config.algo)
            if FLAGS.eval_only or command != "train":
                result = experiment.evaluate(config, workdir)
            else:
                result = experiment.train_and_evaluate(config, workdir,
                                                       overwrite=FLAGS.overwrite)
        except (ValueError, OSError, training.Diverged) as e:
            sys.exit(f"{prog}: error: {e}")
        if result is not None:  # None: a worker other than the chief
            print("\n".join(result.lines))

    app.run(run, argv=argv, flags_parser=parse)
