"""The `tf-meta` command (console script): one subcommand a task.

    tf-meta predict --model MODEL [--support DIR] --query DIR_OR_FILE [...] [--csv FILE]
                    [--json FILE] [--top_k N]

Subcommands: predict (`tf_meta.predict`). Each is a module with DESCRIPTION (its help,
the first line the summary), add_arguments(parser) and run(args) -> exit status, so the
command line of each lives beside its code.
"""

import argparse
import sys

from tf_meta import predict

COMMANDS = {"predict": predict}  # name -> module: DESCRIPTION, add_arguments, run


def parser():
    """The argparse parser of `tf-meta` and its subcommands."""
    main_parser = argparse.ArgumentParser(
        prog="tf-meta", description="Meta-learning for TensorFlow/Keras: commands.")
    commands = main_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub = commands.add_parser(name, help=module.DESCRIPTION.split("\n")[0],
                                  description=module.DESCRIPTION,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub).set_defaults(run=module.run)
    return main_parser


def main(argv=None):
    """Parses `argv` (default sys.argv[1:]) and runs its subcommand; returns the exit status
    (argparse exits 2 itself on a malformed command line, 0 after --help)."""
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
