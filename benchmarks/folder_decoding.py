"""Seconds to read an image folder: decoded in parallel through tf.data, or one file at a time.

Writes `--classes` × `--images` random PNGs of `--size`² × `--channels` to a temporary
folder, then times `tf_meta.data.folder` on it `--repeats` times each way, alternating:
as the library reads (`image_files.read_many`: a tf.data map from PARALLEL_FROM files on)
and with PARALLEL_FROM raised above the file count, so every file goes through
`image_files.read` in turn (how folders were read before). Prints one JSON line with the
median seconds of each and their ratio.

  python -m benchmarks.folder_decoding --size=84 --channels=3
"""

import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from tf_meta import data  # noqa: E402
from tf_meta.data import image_files  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("classes", 20, "class folders")
flags.DEFINE_integer("images", 100, "PNG files per class")
flags.DEFINE_integer("size", 84, "side of the square images, also the model's")
flags.DEFINE_integer("channels", 3, "1 or 3")
flags.DEFINE_integer("repeats", 5, "timed reads each way")


def write_folder(root, classes, images, size, channels, seed=0):
    rng = np.random.default_rng(seed)
    for c in range(classes):
        os.makedirs(os.path.join(root, f"c{c:02d}"))
        for i in range(images):
            pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
            tf.io.write_file(os.path.join(root, f"c{c:02d}", f"{i:03d}.png"),
                             tf.io.encode_png(pixels))


def seconds_to_read(root, size, channels, one_at_a_time):
    saved = image_files.PARALLEL_FROM
    image_files.PARALLEL_FROM = float("inf") if one_at_a_time else saved
    try:
        start = time.perf_counter()
        source = data.folder(root, image_size=size, channels=channels)
        return time.perf_counter() - start, source
    finally:
        image_files.PARALLEL_FROM = saved


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as root:
        write_folder(root, FLAGS.classes, FLAGS.images, FLAGS.size, FLAGS.channels)
        seconds_to_read(root, FLAGS.size, FLAGS.channels, False)  # warm-up: traces the map
        times = {"parallel": [], "one_at_a_time": []}
        for _ in range(FLAGS.repeats):
            for way in times:
                seconds, source = seconds_to_read(root, FLAGS.size, FLAGS.channels,
                                                  way == "one_at_a_time")
                times[way].append(seconds)
        assert source.examples.shape[:2] == (FLAGS.classes, FLAGS.images)
    median = {way: statistics.median(t) for way, t in times.items()}
    print(json.dumps({"kind": "folder_decoding", "files": FLAGS.classes * FLAGS.images,
                      "image": [FLAGS.size, FLAGS.size, FLAGS.channels],
                      "parallel_s": round(median["parallel"], 2),
                      "one_at_a_time_s": round(median["one_at_a_time"], 2),
                      "speedup": round(median["one_at_a_time"] / median["parallel"], 2),
                      "cpus": os.cpu_count()}))


if __name__ == "__main__":
    app.run(main)
