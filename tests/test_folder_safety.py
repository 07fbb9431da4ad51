"""Image folders are read safely: what `data.folder` does with files that are not plain images.

Each test is one case of the specification; every refusal is a one-line ValueError that
names the file. Pillow (a dependency of matplotlib, a test extra) writes the GIF, BMP and
WebP files, so they are what other programs write.
"""

import io
import os
import resource
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from tf_meta import data


def make_classes(root, counts=(3, 3)):
    rng = np.random.default_rng(0)
    for c, n in enumerate(counts):
        os.makedirs(root / f"c{c}", exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 12), np.uint8)).save(root / f"c{c}/{i}.png")


def refusal(root, **kwargs):
    """The message of the ValueError that `data.folder(root)` raises; checks it is one line."""
    with pytest.raises(ValueError) as raised:
        data.folder(str(root), **kwargs)
    assert "\n" not in str(raised.value)
    return str(raised.value)


def solid_png(path, width, height):
    """A real width x height 8-bit grayscale PNG of zeros, deflated row by row (few KB)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    deflate, row = zlib.compressobj(9), bytes(width + 1)  # filter byte 0, then the pixels
    pixels = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_a_fifo_named_like_an_image_is_refused_without_being_opened(tmp_path):
    """Opening a FIFO waits for a writer forever, so the read runs in a process with a timeout."""
    make_classes(tmp_path)
    os.mkfifo(tmp_path / "c0" / "x.png")
    program = ("import sys; from tf_meta import data\n"
               "try: data.folder(sys.argv[1])\n"
               "except ValueError as e: print(e)")
    try:
        done = subprocess.run([sys.executable, "-c", program, str(tmp_path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("data.folder hung on a FIFO named x.png")
    assert done.stdout == (f"cannot read image {str(tmp_path / 'c0' / 'x.png')!r}: it is a FIFO, "
                           "not a regular file; remove or rename it\n")


@pytest.mark.parametrize("make,reason", [
    (os.mkdir, "it is a directory, not a regular file; remove or rename it"),
    (lambda p: os.symlink(p, p), "Too many levels of symbolic links; remove it or replace it"),
    (lambda p: os.symlink(p.parent / "gone.png", p),
     "No such file or directory; remove it or replace it"),
], ids=["a directory", "a symlink loop", "a broken symlink"])
def test_a_directory_or_a_bad_link_named_like_an_image_is_one_line(tmp_path, make, reason):
    make_classes(tmp_path)
    make(tmp_path / "c1" / "x.png")
    assert refusal(tmp_path).startswith(
        f"cannot read image {str(tmp_path / 'c1' / 'x.png')!r}: {reason}")


def test_a_symlink_to_an_image_is_read_as_the_image(tmp_path):
    make_classes(tmp_path, (3, 3, 0))
    for i in range(3):
        os.symlink(tmp_path / "c0" / f"{i}.png", tmp_path / "c2" / f"{i}.png")
    source = data.folder(str(tmp_path), image_size=12)
    np.testing.assert_array_equal(source.examples[2], source.examples[0])


def test_a_16000x16000_png_is_refused_from_its_header_before_decoding(tmp_path):
    solid_png(tmp_path / "small.png", 20, 10)  # the writer makes real PNGs
    assert Image.open(tmp_path / "small.png").size == (20, 10)
    make_classes(tmp_path / "data")
    solid_png(tmp_path / "data" / "c0" / "huge.png", 16000, 16000)  # 243 KB on disk
    assert os.path.getsize(tmp_path / "data" / "c0" / "huge.png") < 300_000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    message = refusal(tmp_path / "data")
    assert message == (f"cannot read image {str(tmp_path / 'data' / 'c0' / 'huge.png')!r}: it is "
                       "16000x16000 = 256,000,000 pixels, more than max_pixels=16,777,216; "
                       "shrink it, or pass a larger max_pixels to tf_meta.data.folder")
    # Decoding it would take 256 MB of uint8 and 1 GB as float32.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 100_000


def write(image, path, fmt, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)


def noise(mode, size=(10, 8), seed=0):
    """A Pillow image of `mode`, width x height = size, of random colours."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.mark.parametrize("fmt,frames", [("PNG", 1), ("JPEG", 1), ("BMP", 1), ("GIF", 1),
                                        ("GIF", 3)])
def test_the_pixel_bound_is_read_from_the_header_of_every_format(tmp_path, fmt, frames):
    """A GIF counts all its frames: TF's decoder reads every one of them."""
    images = [noise("RGB", seed=s) for s in range(frames)]
    write(images[0], tmp_path / "c0" / f"0.{fmt.lower()}", fmt,
          **(dict(save_all=True, append_images=images[1:]) if frames > 1 else {}))
    assert data.folder(str(tmp_path), max_pixels=frames * 80).counts.tolist() == [1]
    size = "10x8 = 80" if frames == 1 else "3 frames of 10x8 = 240"
    assert f": it is {size} pixels, more than max_pixels={frames * 80 - 1}; " in refusal(
        tmp_path, max_pixels=frames * 80 - 1)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("fmt,mode", [("BMP", "L"), ("BMP", "P"), ("BMP", "RGB"), ("BMP", "RGBA"),
                                      ("GIF", "L"), ("GIF", "P"), ("GIF", "RGB")])
def test_bmp_and_gif_give_the_pixels_png_gives(tmp_path, fmt, mode, channels):
    """Each advertised format is read in grayscale and in RGB; an 8-bit BMP's palette is
    applied (TF's decoder returns its indices); a GIF gives its first frame."""
    first, second = noise(mode, seed=0), noise(mode, seed=1)
    write(first, tmp_path / "file" / "c0" / f"0.{fmt.lower()}", fmt,
          **(dict(save_all=True, append_images=[second]) if fmt == "GIF" else {}))
    saved = Image.open(tmp_path / "file" / "c0" / f"0.{fmt.lower()}").convert("RGB")
    write(saved, tmp_path / "png" / "c0" / "0.png", "PNG")
    read, expected = (data.folder(str(tmp_path / kind), image_size=8, channels=channels)
                      for kind in ("file", "png"))
    assert read.examples.shape == (1, 1, 8, 8, channels)
    # Grayscale: TF's PNG decoder and tf.image.rgb_to_grayscale round differently.
    np.testing.assert_allclose(read.examples, expected.examples, atol=1)


def test_an_image_whose_size_cannot_be_read_first_is_refused(tmp_path):
    """TF decodes WebP and JPEG XL as well, but their headers are not read here."""
    write(noise("RGB"), tmp_path / "c0" / "0.png", "WEBP")
    assert refusal(tmp_path).endswith(
        "0.png': Unknown image file format. One of PNG, JPEG, GIF, BMP required.")


def test_hidden_files_and_folders_are_ignored(tmp_path):
    make_classes(tmp_path)
    make_classes(tmp_path / ".ipynb_checkpoints")  # Jupyter's copies: not a class
    (tmp_path / "c0" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "c0" / "._0.png").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble
    os.mkdir(tmp_path / "c1" / ".thumbnails.png")
    source = data.folder(str(tmp_path))
    assert source.names == ("c0", "c1") and source.counts.tolist() == [3, 3]


def test_a_run_length_compressed_bmp_is_refused_not_garbled(tmp_path):
    """TF's BMP decoder ignores the compression field and would return the RLE bytes."""
    buffer = io.BytesIO()
    noise("P").save(buffer, "BMP")
    rle8 = bytearray(buffer.getvalue())
    rle8[30:34] = struct.pack("<I", 1)  # the compression field: BI_RLE8
    (tmp_path / "c0").mkdir()
    (tmp_path / "c0" / "0.bmp").write_bytes(bytes(rle8))
    assert refusal(tmp_path).endswith(
        "0.bmp': an OS/2 or run-length compressed BMP; save it as PNG")


@pytest.mark.parametrize("head", [b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM"],
                         ids=["png", "gif", "bmp"])
def test_a_truncated_header_is_one_line(tmp_path, head):
    (tmp_path / "c0").mkdir()
    (tmp_path / "c0" / "0.png").write_bytes(head)
    assert refusal(tmp_path).endswith("0.png': truncated header")
