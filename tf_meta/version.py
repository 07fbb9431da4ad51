"""The library's version: recorded in every run folder's flags.txt and every export."""

import os
import subprocess

VERSION = "0.1.0"


def source_commit():
    """The git commit tf_meta is imported from, "+changes" appended when its checkout has
    uncommitted changes to tracked files; None outside a git checkout (an installed wheel)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        def git(*args):
            return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        if not os.path.exists(os.path.join(root, ".git")):
            return None
        commit = git("rev-parse", "HEAD")
        return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no")
                         else "")
    except (OSError, subprocess.SubprocessError):
        return None
