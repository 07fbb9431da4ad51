"""What the command line shows: TensorFlow's native start-up notices held back, and
whether output goes to a terminal (a progress bar) or a log (one line an interval).

Imports no TensorFlow: the package (tf_meta/__init__) enters `without_start_up_noise` before
it imports TensorFlow, so every command and library user starts quietly.
"""

import contextlib
import os
import re
import sys
import tempfile

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
    but TensorFlow's start-up notices (START_UP_NOISE): a real error still shows.

    TF_CPP_MIN_LOG_LEVEL defaults to 1 (no native INFO lines) unless the user set it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
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


def interactive(stream=None):
    """Whether `stream` (default sys.stdout) is a terminal, where a progress bar may redraw
    its line; a file or pipe gets whole lines instead (Keras's own bar decides by whether
    the `posix` module is loaded, so a redirected log fills with its escape codes)."""
    stream = sys.stdout if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
