"""The file system, through tf.io.gfile: local paths and every scheme TensorFlow has in the
process (gs:// and ram:// built in; s3://, hdfs:// where a plugin registers them).

A local path (no scheme, or file://) has two guarantees a remote one lacks, and tf_meta
relies on them only there (`is_local`): a folder renames atomically (rename(2); GCS renames
a folder object by object, ram:// renames only its own entry), and a process can lock one
(flock; TF's file systems offer no lock).
"""

import os

import tensorflow as tf


def is_local(path):
    """Whether `path` is on this machine's file system: no scheme, or file://."""
    return "://" not in path or path.startswith("file://")


def local_path(path):
    """`path` without file://, as the os module takes it; `path` must be local."""
    return path[len("file://"):] if path.startswith("file://") else path


def error_cause(error):
    """The first line of a file-system error's message (TensorFlow's or an OSError)."""
    return (getattr(error, "message", None) or str(error) or type(error).__name__).splitlines()[0]


def write_whole(path, text, temporary_suffix=".partial"):
    """Writes `text` to `path` through a temporary file beside it, renamed over `path`: a
    reader sees the old file or the new one, never half of one.

    Raises:
      OSError: one line naming `path` and the cause, when the file system refuses (disk
        full, read-only, a missing folder); the temporary file is removed.
    """
    temporary = path + temporary_suffix
    try:
        with tf.io.gfile.GFile(temporary, "w") as f:
            f.write(text)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except (OSError, tf.errors.OpError) as e:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
        raise OSError(f"cannot write {path}: {error_cause(e)}") from None


def check_writable(path):
    """Raises ValueError unless folder `path` can be written; called before training, so a
    bad path costs a second, not a training run.

    Local: the nearest existing ancestor must be a writable folder; nothing is created.
    Elsewhere: the scheme must be one TensorFlow has, and a probe file is written into
    `path` and removed (an object store has no folder permissions to read: only a write
    tells). A file system with real folders (HDFS) may keep the folder it created.
    """
    if is_local(path):
        return _check_local_writable(path)
    try:
        if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
            raise ValueError(f"cannot write {path!r}: it is not a folder")
        probe = os.path.join(path, f".tf_meta-write-check-{os.getpid()}")
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except tf.errors.UnimplementedError:
        scheme = path.split("://", 1)[0]
        raise ValueError(f"cannot write {path!r}: this TensorFlow has no file system for "
                         f"{scheme}:// (gs:// and ram:// are built in; others need a plugin "
                         "that registers them)") from None
    except tf.errors.OpError as e:
        raise ValueError(f"cannot write {path!r}: {error_cause(e)}") from None


def _check_local_writable(path):
    existing = os.path.abspath(local_path(path))
    while not os.path.exists(existing):  # the nearest ancestor that exists decides
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"cannot write {path!r}: {existing!r} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path!r}: {existing!r} is not writable")


def move_files(source, target, last):
    """Moves every file under folder `source` to the same place under `target`, one at a
    time, the file named `last` (relative to `source`) after all the others.

    For a file system without an atomic folder rename: a reader polling `target` that
    needs `last` (TF Serving: saved_model.pb) finds it only once the rest is there.
    The first move fails, moving nothing, when `target` already holds that file.

    Raises:
      tf.errors.OpError: from the first move (nothing moved).
      OSError: a later move failed; `target` holds part of `source`.
    """
    names = sorted(path[len(source):].strip("/") for path in _files_under(source))
    names.sort(key=lambda name: name == last)  # stable: `last` goes to the end
    for i, name in enumerate(names):
        destination = os.path.join(target, name)
        try:
            tf.io.gfile.makedirs(os.path.dirname(destination))
            tf.io.gfile.rename(os.path.join(source, name), destination, overwrite=False)
        except tf.errors.OpError as e:
            if i == 0:
                raise
            raise OSError(f"moving {name} into {target}: {error_cause(e)}") from None


def _files_under(folder):
    """The files under `folder`, by glob one level at a time (gfile.walk lists ram://'s
    "assets.extra" as a child ".extra" of "assets": its listing matches name prefixes)."""
    found, pattern = [], folder
    while True:
        pattern = os.path.join(pattern, "*")
        paths = tf.io.gfile.glob(pattern)
        if not paths:
            return found
        found += [path for path in paths if not tf.io.gfile.isdir(path)]
