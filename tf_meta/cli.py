"""The `tf-meta` command (console script): one subcommand a task.

    tf-meta train    [--flags]   meta-train, evaluate and export a learner (= train.py)
    tf-meta evaluate [--flags]   evaluate a trained run (--model_dir) on fixed test episodes
    tf-meta export   [--flags]   export a trained run for TF Serving
    tf-meta predict --model MODEL [--support DIR] --query DIR_OR_FILE [...]

train, evaluate and export take the run's absl flags (`tf_meta.run_command`; `--helpfull`
lists them all); predict has its own (`tf_meta.predict`, argparse: DESCRIPTION,
add_arguments(parser), run(args)), and needs only an export. A command's module is
imported when it runs. No command shows TensorFlow's native start-up lines: the package's
import, which comes first, holds them back (tf_meta/__init__, `console`).
"""

import argparse
import sys

RUN_COMMANDS = {  # name -> summary; all three are `tf_meta.run_command`
    "train": "meta-train, evaluate and export a learner (the same as train.py)",
    "evaluate": "evaluate a trained run (--model_dir) on its fixed test episodes",
    "export": "export a trained run for TF Serving (evaluated first: the export records it)",
}
PREDICT = "classify image files with an export, through its SavedModel alone"


def parser():
    """The argparse parser of `tf-meta` itself: its help, and unknown commands refused."""
    main_parser = argparse.ArgumentParser(
        prog="tf-meta", description="Meta-learning for TensorFlow/Keras: commands. "
        "`tf-meta COMMAND --help` describes each.")
    commands = main_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in {**RUN_COMMANDS, "predict": PREDICT}.items():
        commands.add_parser(name, help=summary, add_help=False)
    return main_parser


def main(argv=None):
    """Runs the subcommand `argv` (default sys.argv[1:]) names; returns its exit status
    (argparse exits 2 itself on a malformed command line, 0 after --help; train, evaluate
    and export exit themselves, as absl's app.run does)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else None
    if command in RUN_COMMANDS:
        from tf_meta import run_command

        prog = f"tf-meta {command}"
        doc = f"{prog}: {RUN_COMMANDS[command]}.\n\n{run_command.__doc__}"
        return run_command.main([prog, *argv[1:]], command, prog=prog, doc=doc)
    if command == "predict":
        from tf_meta import predict
        predict_parser = argparse.ArgumentParser(
            prog="tf-meta predict", description=predict.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        return predict.run(predict.add_arguments(predict_parser).parse_args(argv[1:]))
    parser().parse_args(argv)  # help, or an error naming the commands
    return 2


if __name__ == "__main__":
    sys.exit(main())
