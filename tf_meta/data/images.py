"""Images as a data source provides them -> the pixels a learner trains on, in TF ops only.

`to_model_pixels` is the whole image preprocessing. The sources apply it when they load
images for training, and an export applies it inside its serving graph, so a served model
sees exactly the pixels training saw. `ImageContract` holds its settings and is recorded in
an export's tf_meta.json. `decode` and `declared_pixels` are the encoded-image side (PNG,
JPEG, GIF, BMP bytes), shared by the folder reader and the `encoded` signatures.
"""

from typing import NamedTuple

import tensorflow as tf

RESIZE = "area"  # tf.image.resize method: each model pixel averages the source pixels it covers
MAX_SIDE = 4096  # the largest height or width a served image may have


class ImageContract(NamedTuple):
    """How images as the source provides them become the pixels a learner sees.

    In order: channels converted (`convert_channels`), inverted if `invert`, resized to
    height x width by area averaging, rounded to integers in [0, 255] (training stores them
    as uint8). Learners rescale to [0, 1] themselves.

    Fields:
      height, width: the model's image size. Source images of any size are resized to it.
      channels: 1 (grayscale: RGB is converted by tf.image.rgb_to_grayscale) or 3 (RGB:
        grayscale is repeated). An alpha channel is dropped.
      invert: the source draws dark on light (Omniglot's strokes) and models see
        255 - pixel, bright on black. A served request whose images have a dark
        background is then refused (`check_source_pixels`): it was inverted already.
      source: what the source's images are, for metadata and messages, e.g.
        "TFDS omniglot: 105x105x3 uint8, dark strokes on white".
    """

    height: int
    width: int
    channels: int
    invert: bool = False
    source: str = ""

    @property
    def input_shape(self):
        return (self.height, self.width, self.channels)

    def to_json(self):
        return {"height": self.height, "width": self.width, "channels": self.channels,
                "invert": self.invert, "resize": RESIZE, "pixels": "0-255",
                "source": self.source}


def convert_channels(images, channels):
    """[..., C] pixels, C in 1-4 (gray, gray+alpha, RGB, RGBA) -> [..., channels] (1 or 3).

    C may be known only at run time (a served request), hence tf.cond.
    """
    found = tf.shape(images)[-1]
    if channels == 3:
        converted = tf.cond(found >= 3, lambda: images[..., :3],
                            lambda: tf.repeat(images[..., :1], 3, axis=-1))
    else:
        converted = tf.cond(found >= 3, lambda: tf.image.rgb_to_grayscale(images[..., :3]),
                            lambda: images[..., :1])
    return tf.ensure_shape(converted, [None] * (images.shape.rank - 1) + [channels])


def to_model_pixels(images, contract):
    """The preprocessing of `contract`, in TF ops (graph or eager).

    Args:
      images: [n, H, W, C] pixels 0-255, any numeric dtype, any H and W, C in 1-4.
      contract: ImageContract.
    Returns:
      [n, contract.height, contract.width, contract.channels] float32 integers in [0, 255].
    """
    pixels = convert_channels(tf.cast(images, tf.float32), contract.channels)
    if contract.invert:
        pixels = 255.0 - pixels
    pixels = tf.image.resize(pixels, [contract.height, contract.width], method=RESIZE)
    return tf.round(tf.clip_by_value(pixels, 0.0, 255.0))


def check_source_pixels(images, name, contract, max_values):
    """In-graph checks that `images` are pixels as the contract's source provides them.

    Refused, each with a message naming `name`: not rank 4; a channel count other than 1
    or 3; a side above MAX_SIDE; more than `max_values` values in all; NaN or Inf; values
    outside [0, 255]; a set scaled to [0, 1] (largest pixel <= 1, not all zero); and, when
    the contract inverts, a set whose mean pixel is below 128: a dark background, so
    images already inverted (the model's own pixels, e.g. an old request's), which the
    inversion would turn into their negatives.

    Args:
      images: [n, H, W, C] float32; name: the input's name; contract: ImageContract;
      max_values: the most values (n*H*W*C) one input may hold.
    Returns:
      `images`, computed after every check passed.
    """
    images = tf.ensure_shape(images, [None, None, None, None])
    shape = tf.shape(images, out_type=tf.int64)
    checks = [
        tf.debugging.Assert(tf.reduce_any(tf.equal(shape[3], [1, 3])),
                            [f"{name} must have 1 (grayscale) or 3 (RGB) channels; found",
                             shape[3]]),
        tf.debugging.assert_less_equal(
            tf.reduce_max(shape[1:3]), tf.constant(MAX_SIDE, tf.int64),
            message=f"{name}: an image side is above {MAX_SIDE} pixels; shrink the images"),
        tf.debugging.assert_less_equal(
            tf.reduce_prod(shape), tf.constant(max_values, tf.int64),
            message=f"{name} hold more than {max_values:,} values, the bound of this export"),
    ]
    with tf.control_dependencies(checks):
        finite, checked = check_pixels(images, name)
    checks = [checked]
    if contract.invert:
        checks.append(check_light_background(
            tf.reduce_mean(finite), f"{name} have", contract,
            ": send them uninverted, or send model pixels to the preprocessed signature"))
    with tf.control_dependencies(checks):
        return tf.identity(images)


def check_pixels(images, name):
    """In-graph checks that `images` [n, H, W, C] are pixels 0-255, in order: finite, in
    [0, 255], and not scaled to [0, 1] (the commonest client mistake: a largest pixel in
    (0, 1], where under 0-255 nothing would be brighter than 1/255; all zeros passes, the
    same images under either scale). In order, so a NaN is named as such, not as out of range.

    Returns:
      (`images` after the finite check, the last check: None when run eagerly).
    """
    finite = tf.debugging.assert_all_finite(images, f"{name} has NaN or Inf")
    low, high = tf.reduce_min(finite), tf.reduce_max(finite)
    in_range = f"{name} must be pixels in [0, 255]"
    checks = [tf.debugging.assert_greater_equal(low, 0.0, message=in_range),
              tf.debugging.assert_less_equal(high, 255.0, message=in_range)]
    with tf.control_dependencies(checks):
        return finite, tf.debugging.Assert(
            tf.logical_or(high > 1.0, high <= 0.0),
            [f"{name} looks scaled to [0, 1] (its largest pixel is <= 1): send pixels 0-255, "
             "multiply by 255. Largest pixel:", high])


def check_light_background(mean, subject, contract, advice=""):
    """In-graph check, for a contract that inverts, that source images have a light
    background: `mean` (their mean pixel) at least 128. Else they were inverted already (the
    model's own pixels), and the inversion would turn them into their negatives.

    Args:
      mean: scalar float32; subject: the message's start, e.g. "query_images have";
      contract: ImageContract; advice: appended to the message, e.g. ": send ...".
    """
    return tf.debugging.Assert(
        mean >= 128.0,
        [f"{subject} a dark background (mean pixel below 128), but this model takes images "
         f"as its source provides them, dark on light ({contract.source}){advice}. "
         "Mean pixel:", mean])


def decode(contents):
    """[H, W, C] uint8 pixels (C 1-4) of PNG, JPEG, GIF (first frame) or BMP bytes."""
    return tf.io.decode_image(contents, expand_animations=False)


def _bytes_at(contents, position, count):
    """[count] int64 byte values of `contents` from `position` (zeros past its end)."""
    padded = tf.strings.join([contents, tf.constant(b"\0" * 32)])
    return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, position, count), tf.uint8),
                   tf.int64)


def _little_endian(values):
    """The unsigned integer whose little-endian bytes are `values` ([n] int64)."""
    return tf.reduce_sum(values * tf.bitwise.left_shift(
        tf.constant(1, tf.int64), 8 * tf.range(tf.size(values, out_type=tf.int64))))


def declared_pixels(contents):
    """Pixels (width x height, x frames for a GIF) that encoded image bytes declare.

    Read from the header, before decoding: PNG (IHDR), JPEG (tf.image.extract_jpeg_shape),
    BMP (a palette BMP is refused: its pixels decode as palette indices; so are OS/2 and
    run-length compressed ones, as data.folder refuses them), GIF (the
    screen size times the count of image-descriptor bytes, an upper bound on its frames,
    all of which TF's decoder reads). Another format declares 0, and decode names it.

    Args:
      contents: scalar string.
    Returns:
      scalar int64, after the palette-BMP check.
    """
    head = tf.strings.substr(contents, 0, 8)
    png = tf.equal(head, b"\x89PNG\r\n\x1a\n")
    jpeg = tf.equal(tf.strings.substr(contents, 0, 3), b"\xff\xd8\xff")
    gif = tf.reduce_any(tf.equal(tf.strings.substr(contents, 0, 6), [b"GIF87a", b"GIF89a"]))
    bmp = tf.equal(tf.strings.substr(contents, 0, 2), b"BM")

    def big_endian(position):
        return _little_endian(tf.reverse(_bytes_at(contents, position, 4), [0]))

    def signed(position):  # a BMP's int32 height is negative for top-down rows
        value = _little_endian(_bytes_at(contents, position, 4))
        return tf.abs(tf.where(value >= 1 << 31, value - (1 << 32), value))

    def gif_pixels():
        frames = tf.reduce_sum(tf.cast(tf.equal(tf.io.decode_raw(contents, tf.uint8), 0x2C),
                                       tf.int64))
        return (_little_endian(_bytes_at(contents, 6, 2))
                * _little_endian(_bytes_at(contents, 8, 2)) * tf.maximum(frames, 1))

    def jpeg_pixels():
        return tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(contents)[:2], tf.int64))

    palette = tf.logical_and(bmp, _little_endian(_bytes_at(contents, 28, 2)) <= 8)
    # As data.folder refuses them (image_files): TF's decoder ignores the compression field
    # and an OS/2 header, and would read run-length codes as pixels.
    compression = _little_endian(_bytes_at(contents, 30, 4))
    unsupported = tf.logical_and(bmp, tf.logical_or(
        _little_endian(_bytes_at(contents, 14, 4)) < 40,
        tf.logical_and(tf.not_equal(compression, 0), tf.not_equal(compression, 3))))
    checks = [tf.debugging.Assert(tf.logical_not(unsupported),
                                  ["an OS/2 or run-length compressed BMP is not served: send it "
                                   "as PNG"]),
              tf.debugging.Assert(tf.logical_not(palette),
                                  ["a BMP of 8 or fewer bits per pixel (a palette image) is not "
                                   "served: send it as PNG"])]
    with tf.control_dependencies(checks):
        return tf.case([(png, lambda: big_endian(16) * big_endian(20)),
                        (jpeg, jpeg_pixels),
                        (gif, gif_pixels),
                        (bmp, lambda: _little_endian(_bytes_at(contents, 18, 4)) * signed(22))],
                       default=lambda: tf.constant(0, tf.int64))


def decode_to_model_pixels(encoded, contract, max_pixels, name):
    """[n] encoded images -> [n, height, width, channels] model pixels, one at a time.

    Each image's declared size is checked against `max_pixels` before it is decoded; a
    contract that inverts refuses a dark-background image, as `check_source_pixels` does.

    Args:
      encoded: [n] string, PNG/JPEG/GIF/BMP bytes (any sizes, 1-4 channels).
      contract: ImageContract; max_pixels: per image; name: the input's name.
    Returns:
      [n, *contract.input_shape] float32.
    """
    def one(contents):
        pixels = declared_pixels(contents)
        check = tf.debugging.assert_less_equal(
            pixels, tf.constant(max_pixels, tf.int64),
            message=f"{name}: an image declares more than {max_pixels:,} pixels; shrink it")
        with tf.control_dependencies([check]):
            image = tf.cast(decode(contents), tf.float32)[None]
        if contract.invert:
            check = check_light_background(
                tf.reduce_mean(convert_channels(image, contract.channels)),
                f"{name}: an image has", contract)
            with tf.control_dependencies([check]):
                image = tf.identity(image)
        return to_model_pixels(image, contract)[0]

    encoded = tf.ensure_shape(encoded, [None])
    return tf.map_fn(one, encoded, parallel_iterations=4,
                     fn_output_signature=tf.TensorSpec(contract.input_shape, tf.float32))
