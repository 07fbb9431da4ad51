"""Image files to pixels, safely: regular files only, the size read before decoding.

`read` reads one file; `read_many` decodes many in parallel through tf.data and leaves to
`read` only the files its graph refuses, so both give the same pixels and the same one-line
refusals. Paths are local, or on any TensorFlow filesystem (`scheme://...`: gs://, ram://),
which tf.io.gfile lists and reads; a local file is checked with os.stat before it is opened.
"""

import contextlib
import os
import re
import stat
import struct

import numpy as np
import tensorflow as tf

from tf_meta.data import images

# 4096x4096: decoded and cast to float32 for the resize, an RGB image of this size takes
# about 0.25 GB. Few-shot benchmarks' images are far smaller (Omniglot 105², CUB ~500²);
# a 24-megapixel photo (6000x4000) is refused and has to be shrunk first.
MAX_PIXELS = 4096 * 4096
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")  # any case
READ_BATCH = 64  # decoded images handed from tf.data to numpy at a time
PARALLEL_FROM = 50  # files: `read_many` decodes fewer one at a time (see there)


def is_image_name(name):
    """Whether a file name ends in one of IMAGE_EXTENSIONS, in any case."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def is_remote(path):
    """Whether `path` names a TensorFlow filesystem (gs://, ram://, ...), not a local path."""
    return "://" in path


def isdir(path):
    """os.path.isdir for local paths, tf.io.gfile.isdir for remote ones."""
    return tf.io.gfile.isdir(path) if is_remote(path) else os.path.isdir(path)


def listing(path):
    """The sorted names in directory `path`, without hidden ones (starting with ".").

    Raises:
      ValueError: one line, when the folder cannot be listed.
    """
    try:
        names = ([n.rstrip("/") for n in tf.io.gfile.listdir(path)] if is_remote(path)
                 else os.listdir(path))  # a bucket lists a folder as "name/"
    except OSError as e:
        raise ValueError(f"cannot list folder {path!r}: {e.strerror or e}") from None
    except tf.errors.OpError as e:
        raise ValueError(f"cannot list folder {path!r}: {e.message}") from None
    return sorted(n for n in names if not n.startswith("."))


@contextlib.contextmanager
def _reading(file):
    """Turns what goes wrong reading `file` into one ValueError line naming it."""
    try:
        yield
    except OSError as e:  # a broken or looping link, no permission
        raise ValueError(f"cannot read image {file!r}: {e.strerror or e}; remove it or replace it "
                         "with an image file") from None
    except (ValueError, tf.errors.OpError) as e:
        reason = str(e) if isinstance(e, ValueError) else e.message
        reason = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", reason.splitlines()[0]).strip()
        raise ValueError(f"cannot read image {file!r}: {reason}") from None


def _check_regular(file):
    """Raises unless `file` is a regular file or a link to one; never opens it (a FIFO would
    block). Local: os.stat, which follows links. Remote: a folder is refused; a missing
    file fails when it is read."""
    if is_remote(file):
        if tf.io.gfile.isdir(file):
            raise ValueError("it is a directory, not a regular file; remove or rename it")
        return
    mode = os.stat(file).st_mode
    if not stat.S_ISREG(mode):
        what = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise ValueError(f"it is {what}, not a regular file; remove or rename it")


def read(file, max_pixels=MAX_PIXELS):
    """The pixels of one PNG, JPEG, GIF (its first frame) or BMP file.

    Only a regular file (or a symbolic link to one) is opened (`_check_regular`). The size
    its header declares is checked against `max_pixels` before it is decoded; a GIF counts
    all its frames, which TF's decoder reads.

    Args:
      file: path of the image file, local or `scheme://...`.
      max_pixels: the most pixels (width x height, times the frames of a GIF) allowed.

    Returns:
      [height, width, C] float32 pixels in [0, 255], as the file holds them: C is 1
      (grayscale), 2 (grayscale and alpha), 3 (RGB) or 4 (RGBA); a palette BMP gives RGB.
      `images.to_model_pixels` converts them, as a served export converts the same bytes.

    Raises:
      ValueError: one line naming the file: not a regular file, too large, unreadable.
    """
    with _reading(file):
        _check_regular(file)
        with tf.io.gfile.GFile(file, "rb") if is_remote(file) else open(file, "rb") as f:
            contents = f.read()
        kind, frames, width, height = _header_size(contents)
        if frames * width * height > max_pixels:
            size = f"{frames} frames of {width}x{height}" if frames > 1 else f"{width}x{height}"
            raise ValueError(f"it is {size} = {frames * width * height:,} pixels, more than "
                             f"max_pixels={max_pixels:,}; shrink it, or pass a larger "
                             "max_pixels to tf_meta.data.folder")
        return _decode(contents, kind)


def read_many(files, transform, max_pixels=MAX_PIXELS):
    """transform(pixels) of every image file, as `read` reads them, decoded in parallel.

    Every file is first checked to be a regular file (`_check_regular`, in order, so a FIFO
    is never opened). From PARALLEL_FROM files on, a tf.data map (AUTOTUNE parallel calls)
    reads each file's bytes (tf.io.read_file), checks its header as `read` does
    (`_decodes_in_graph`, the same `_header_size` and `max_pixels` bound, before decoding),
    then decodes and transforms it. A file the graph does not decode (a palette BMP, whose
    palette `read` applies; a corrupt, unknown or too large file) drops out of the stream and
    is given to `read`, in order, which reads it with the same pixels or raises the one-line
    error naming it. Fewer files are read by `read` alone: setting up the stream (~0.1 s,
    a second or two on a process's first) then costs more than it saves (measured: 50
    84x84 PNGs, 0.14 s in parallel, 0.17 s one at a time; 2,000, 2.7 s and 9.0 s).

    Args:
      files: [n] paths, local or `scheme://...`.
      transform: [H, W, C] float32 pixels (as `read` returns them) -> one tensor of a fixed
        shape, in TF ops (traced for the stream; run eagerly on what `read` reads).
      max_pixels: as for `read`.

    Returns:
      [n, *shape] numpy array of the transformed images, in the order of `files`.

    Raises:
      ValueError: one line naming the first file (in order) that cannot be read.
    """
    for file in files:
        with _reading(file):
            _check_regular(file)
    results = [None] * len(files)
    if len(files) >= PARALLEL_FROM:
        for index, values in _decoded_stream(files, transform, max_pixels).as_numpy_iterator():
            for i, value in zip(index, values):
                results[i] = value
    for i, file in enumerate(files):
        if results[i] is None:
            results[i] = transform(read(file, max_pixels)).numpy()
    return np.stack(results)


def _decoded_stream(files, transform, max_pixels):
    """tf.data stream of (indices, transformed images) of the `files` the graph decodes."""
    def decode(index, file):
        contents = tf.io.read_file(file)
        decodes = tf.numpy_function(lambda c: _decodes_in_graph(c, max_pixels), [contents],
                                    tf.bool, stateful=False)
        with tf.control_dependencies([tf.debugging.Assert(decodes, ["left to read"])]):
            return index, transform(tf.cast(images.decode(contents), tf.float32))

    indices = tf.range(len(files), dtype=tf.int64)
    return (tf.data.Dataset.from_tensor_slices((indices, tf.constant(files, tf.string)))
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .ignore_errors().batch(READ_BATCH))


def _decodes_in_graph(contents, max_pixels):
    """Whether `read_many`'s graph decodes these bytes as `read` would: their header passes
    `read`'s checks and they are not a palette BMP (TF decodes its palette indices)."""
    try:
        kind, frames, width, height = _header_size(contents)
    except ValueError:
        return False
    palette = kind == "bmp" and struct.unpack_from("<H", contents, 28)[0] <= 8
    return not palette and 0 < frames * width * height <= max_pixels


def _header_size(contents):
    """(kind, frames, width, height) of a PNG, JPEG, GIF or BMP file, from its header.

    Read before decoding, so that an image too large to decode is refused unallocated.
    For a GIF: all its frames (TF's decoder reads every one) at the largest frame size.

    Raises:
      ValueError: another or no format, a truncated header, an unsupported BMP.
    """
    try:
        if contents.startswith(b"\x89PNG\r\n\x1a\n"):
            return ("png", 1, *struct.unpack_from(">II", contents, 16))  # in the IHDR chunk
        if contents.startswith(b"\xff\xd8\xff"):
            height, width, _ = tf.image.extract_jpeg_shape(contents).numpy().tolist()
            return "jpeg", 1, width, height
        if contents[:6] in (b"GIF87a", b"GIF89a"):
            sizes = _gif_frame_sizes(contents)
            if not sizes:
                raise ValueError("a GIF without images")
            return "gif", len(sizes), max(w for w, _ in sizes), max(h for _, h in sizes)
        if contents.startswith(b"BM"):
            header, width, height = struct.unpack_from("<Iii", contents, 14)
            compression, = struct.unpack_from("<I", contents, 30)
            if header < 40 or compression not in (0, 3):  # TF's decoder ignores both
                raise ValueError("an OS/2 or run-length compressed BMP; save it as PNG")
            return "bmp", 1, width, abs(height)
    except (IndexError, struct.error):
        raise ValueError("truncated header") from None
    if not contents:
        raise ValueError("Input is empty.")
    raise ValueError("Unknown image file format. One of PNG, JPEG, GIF, BMP required.")


def _gif_frame_sizes(contents):
    """[(width, height)] of the frames of a GIF, from its block headers (nothing decoded)."""
    def table(flags):  # bytes of the colour table that a packed-fields byte announces
        return 3 << ((flags & 7) + 1) if flags & 0x80 else 0

    sizes, pos = [], 13 + table(contents[10])  # after the logical screen descriptor
    while pos < len(contents) and contents[pos] != 0x3B:  # up to the trailer
        if contents[pos] == 0x2C:  # image descriptor, colour table, LZW code size
            sizes.append(struct.unpack_from("<HH", contents, pos + 5))
            pos += 11 + table(contents[pos + 9])
        elif contents[pos] == 0x21:  # extension introducer and label
            pos += 2
        else:
            raise ValueError(f"a GIF block of unknown type 0x{contents[pos]:02x}")
        while pos < len(contents) and contents[pos]:  # data sub-blocks, up to an empty one
            pos += contents[pos] + 1
        pos += 1
    return sizes


def _decode(contents, kind):
    """[H, W, C] float32 pixels of a file `_header_size` accepted, as `images.decode` gives
    them (the decoder a served export runs), but a palette BMP's indices mapped to RGB."""
    image = images.decode(contents)
    if kind == "bmp" and image.shape[-1] == 1:
        image = tf.gather(_bmp_palette(contents), tf.cast(image[..., 0], tf.int32))
    return tf.cast(image, tf.float32)


def _bmp_palette(contents):
    """[colours, 3] uint8 RGB palette of an 8-bit BMP, whose entries are B, G, R, 0."""
    header, = struct.unpack_from("<I", contents, 14)
    colours = struct.unpack_from("<I", contents, 46)[0] or 256
    table = np.frombuffer(contents, np.uint8, 4 * colours, 14 + header)
    return table.reshape(colours, 4)[:, 2::-1]
