"""One image file to pixels, safely: regular files only, the size read before decoding."""

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


def is_image_name(name):
    """Whether a file name ends in one of IMAGE_EXTENSIONS, in any case."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def listing(path):
    """The sorted names in directory `path`, without hidden ones (starting with ".").

    Raises:
      ValueError: one line, when the folder cannot be listed.
    """
    try:
        return sorted(n for n in os.listdir(path) if not n.startswith("."))
    except OSError as e:
        raise ValueError(f"cannot list folder {path!r}: {e.strerror or e}") from None


def read(file, max_pixels=MAX_PIXELS):
    """The pixels of one PNG, JPEG, GIF (its first frame) or BMP file.

    Only a regular file (or a symbolic link to one) is opened: os.stat comes first, so the
    path is local. The size its header declares is checked against `max_pixels` before it
    is decoded; a GIF counts all its frames, which TF's decoder reads.

    Args:
      file: path of the image file.
      max_pixels: the most pixels (width x height, times the frames of a GIF) allowed.

    Returns:
      [height, width, C] float32 pixels in [0, 255], as the file holds them: C is 1
      (grayscale), 2 (grayscale and alpha), 3 (RGB) or 4 (RGBA); a palette BMP gives RGB.
      `images.to_model_pixels` converts them, as a served export converts the same bytes.

    Raises:
      ValueError: one line naming the file: not a regular file, too large, unreadable.
    """
    try:
        mode = os.stat(file).st_mode  # follows symbolic links; never opens (a FIFO would block)
        if not stat.S_ISREG(mode):
            what = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "a device")
            raise ValueError(f"it is {what}, not a regular file; remove or rename it")
        with open(file, "rb") as f:
            contents = f.read()
        kind, frames, width, height = _header_size(contents)
        if frames * width * height > max_pixels:
            size = f"{frames} frames of {width}x{height}" if frames > 1 else f"{width}x{height}"
            raise ValueError(f"it is {size} = {frames * width * height:,} pixels, more than "
                             f"max_pixels={max_pixels:,}; shrink it, or pass a larger "
                             "max_pixels to tf_meta.data.folder")
        image = _decode(contents, kind)
    except OSError as e:  # a broken or looping link, no permission
        raise ValueError(f"cannot read image {file!r}: {e.strerror or e}; remove it or replace it "
                         "with an image file") from None
    except (ValueError, tf.errors.OpError) as e:
        reason = str(e) if isinstance(e, ValueError) else e.message
        reason = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", reason.splitlines()[0]).strip()
        raise ValueError(f"cannot read image {file!r}: {reason}") from None
    return image


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
