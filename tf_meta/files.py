"""Writing a file whole or not at all, through tf.io.gfile (any file system TF has)."""

import tensorflow as tf


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
        cause = (getattr(e, "message", None) or str(e)).splitlines()[0]
        raise OSError(f"cannot write {path}: {cause}") from None
