"""Serving images as the source provides them: the training preprocessing, in the graph.

An export made with the training source's ImageContract answers raw images (pixel arrays
of any size, 1 or 3 channels) and their encoded bytes exactly as the learner answers the
training pipeline's pixels of the same images in memory; requests it cannot answer right
(already inverted, scaled to [0, 1], other channel counts, images too large to decode, a
palette BMP, junk bytes, names that do not match the classes) are refused in one line.
"""

import io
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf

from example_requests import model_pixels, raw_examples
from tf_meta import build_learner, data, export
from tf_meta.data import images
from tf_meta.episode import Episode

OMNIGLOT = data.omniglot_contract()


# MAML's test loop is unrolled, each step more graph to trace in each export signature.
SMALL = {"maml": dict(test_inner_steps=1)}


def trained(algo, input_shape=(28, 28, 1)):
    """A freshly initialised learner: the answers compared here do not depend on training
    (tests/test_export.py serves trained ones), nor on its inner steps."""
    keras.utils.set_random_seed(0)
    return build_learner(algo, input_shape, ways=5, **SMALL.get(algo, {}))


@pytest.fixture(scope="module", params=["protonet", "maml"])
def omniglot_export(request, tmp_path_factory):
    learner = trained(request.param)
    path = export.export_learner(learner, str(tmp_path_factory.mktemp("m") / "model"),
                                 (28, 28, 1), image_contract=OMNIGLOT)
    return learner, tf.saved_model.load(path).signatures


@pytest.fixture(scope="module")
def tfds_images(omniglot_splits):
    """(support, query) as TFDS decodes them, [5, 105, 105, 3] uint8, their PNG bytes, and
    the training source's pixels of the same images."""
    support, query, names = raw_examples()
    decoded = [np.stack([tf.io.decode_png(p, channels=3).numpy() for p in pngs])
               for pngs in (support, query)]
    return decoded, (support, query), model_pixels(omniglot_splits["test"], names)


def in_memory(learner, support, query):
    episode = Episode(tf.constant(support, tf.float32), tf.range(5, dtype=tf.int32),
                      tf.constant(query, tf.float32), tf.zeros([0], tf.int32))
    return learner.independent_query_logits(episode).numpy()


def test_the_omniglot_source_is_its_contract_applied_to_the_tfds_images(tfds_images):
    (support, query), _, (support_pixels, query_pixels) = tfds_images
    np.testing.assert_array_equal(images.to_model_pixels(support, OMNIGLOT), support_pixels)
    np.testing.assert_array_equal(images.to_model_pixels(query, OMNIGLOT), query_pixels)


def test_raw_omniglot_and_its_png_bytes_get_the_in_memory_answers(omniglot_export, tfds_images):
    learner, signatures = omniglot_export
    (support, query), (support_png, query_png), pixels = tfds_images
    expected = in_memory(learner, *pixels)
    labels = tf.range(5, dtype=tf.int32)
    raw = signatures["serving_default"](support_images=tf.constant(support, tf.float32),
                                        support_labels=labels,
                                        query_images=tf.constant(query, tf.float32))
    one_channel = signatures["serving_default"](
        support_images=tf.constant(support[..., :1], tf.float32), support_labels=labels,
        query_images=tf.constant(query[..., :1], tf.float32))
    encoded = signatures["encoded_named"](
        support_images=tf.constant(support_png), support_labels=labels,
        query_images=tf.constant(query_png), support_class_names=tf.constant(list("abcde")))
    for answer in (raw, one_channel, encoded):
        np.testing.assert_allclose(answer["logits"], expected, rtol=1e-5, atol=1e-4)
    assert encoded["class_names"].numpy().tolist() == [
        "abcde"[c].encode() for c in np.argmax(expected, axis=-1)]


def png(array):
    return tf.io.encode_png(array).numpy()


def test_an_rgb_folder_export_answers_raw_images_of_any_size(tmp_path):
    """A folder of RGB images of mixed sizes, trained at 84x84: the export takes the files'
    bytes, or same-sized pixel arrays, and answers as the learner does on the source."""
    rng = np.random.default_rng(0)
    sizes = [(100, 120), (84, 84), (90, 70)]
    for split, classes in (("train", 6), ("test", 5)):
        for c in range(classes):
            colour = rng.integers(0, 256, 3)
            for i, (h, w) in enumerate(sizes):
                pixels = np.clip(colour + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                path = tmp_path / "images" / split / f"class{c}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(png(pixels))
    splits = data.folder_splits(str(tmp_path / "images"), image_size=84, channels=3)
    contract = splits["train"].image_contract
    assert contract.input_shape == (84, 84, 3) and not contract.invert
    learner = build_learner("protonet", (84, 84, 3))
    path = export.export_learner(learner, str(tmp_path / "model"), (84, 84, 3),
                                 image_contract=contract)
    signatures = tf.saved_model.load(path).signatures
    test = splits["test"]
    expected = in_memory(learner, test.examples[:, 0], test.examples[:, 2])
    files = [[(tmp_path / "images" / "test" / f"class{c}" / f"{i}.png").read_bytes()
              for c in range(5)] for i in range(3)]
    encoded = signatures["encoded"](support_images=tf.constant(files[0]),
                                    support_labels=tf.range(5, dtype=tf.int32),
                                    query_images=tf.constant(files[2]))
    np.testing.assert_allclose(encoded["logits"], expected, rtol=1e-5, atol=1e-4)
    decoded = [np.stack([tf.io.decode_png(f).numpy() for f in row]) for row in files]
    raw = signatures["serving_default"](support_images=tf.constant(decoded[0], tf.float32),
                                        support_labels=tf.range(5, dtype=tf.int32),
                                        query_images=tf.constant(decoded[2], tf.float32))
    np.testing.assert_allclose(raw["logits"], expected, rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def protonet_signatures(tmp_path_factory):
    path = export.export_learner(trained("protonet"), str(tmp_path_factory.mktemp("p") / "m"),
                                 (28, 28, 1), image_contract=OMNIGLOT)
    return tf.saved_model.load(path).signatures


def white(n, size=40, channels=1):
    """n dark-on-white drawings: a black square on white, as Omniglot's raw images are."""
    x = np.full((n, size, size, channels), 255, np.float32)
    x[:, 10:20, 10:20] = 0
    return x


def refusal(signature, **inputs):
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        signature(**inputs)
    return error.value.message


LABELS = tf.range(5, dtype=tf.int32)
BAD_PIXELS = {
    "the model's own pixels (inverted already, an old request)": (
        255 - white(5), "have a dark background (mean pixel below 128)"),
    "pixels scaled to [0, 1]": (white(5) / 255, "looks scaled to [0, 1]"),
    "two channels (gray and alpha)": (white(5, channels=2), "must have 1 (grayscale) or 3"),
    "four channels (RGBA)": (white(5, channels=4), "must have 1 (grayscale) or 3"),
    "a side above 4096": (np.full((5, 4097, 1, 1), 255, np.float32), "side is above 4096"),
    "a pixel above 255": (white(5) * 2, "must be pixels in [0, 255]"),
    "NaN": (white(5) * np.nan, "has NaN or Inf"),
}


@pytest.mark.parametrize("case", BAD_PIXELS)
def test_pixel_arrays_it_cannot_answer_right_are_refused(protonet_signatures, case):
    pixels, message = BAD_PIXELS[case]
    assert message in refusal(protonet_signatures["serving_default"],
                              support_images=tf.constant(pixels), support_labels=LABELS,
                              query_images=tf.constant(white(5)))


def test_the_old_request_form_is_refused_and_the_preprocessed_signature_answers_it(
        protonet_signatures):
    model_pixels = images.to_model_pixels(white(10), OMNIGLOT)
    message = refusal(protonet_signatures["serving_default"], support_images=model_pixels[:5],
                      support_labels=LABELS, query_images=model_pixels[5:])
    assert "send model pixels to the preprocessed signature" in message
    answer = protonet_signatures["preprocessed"](support_images=model_pixels[:5],
                                                 support_labels=LABELS,
                                                 query_images=model_pixels[5:])
    assert answer["classes"].shape == (5,)


def test_too_many_pixel_values_are_refused_before_preprocessing(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "MAX_VALUES", 5 * 40 * 40)
    path = export.export_learner(trained("protonet"), str(tmp_path / "m"), (28, 28, 1),
                                 image_contract=OMNIGLOT)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    assert signature(support_images=white(5), support_labels=LABELS,
                     query_images=white(5))["classes"].shape == (5,)
    assert "hold more than 8,000 values" in refusal(
        signature, support_images=white(5, size=41), support_labels=LABELS,
        query_images=white(5))


def big_png_header(width, height):
    """A PNG signature and IHDR declaring width x height, then no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 4


def palette_bmp():
    from PIL import Image
    out = io.BytesIO()
    Image.new("P", (8, 8)).save(out, format="BMP")
    return out.getvalue()


def compressed_bmp():
    """An RGB BMP whose header says run-length compressed (BI_RLE8): TF's decoder would
    read its bytes as plain pixels."""
    from PIL import Image
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(out, format="BMP")
    bmp = bytearray(out.getvalue())
    bmp[30:34] = struct.pack("<I", 1)
    return bytes(bmp)


def test_encoded_images_it_cannot_answer_right_are_refused(protonet_signatures):
    good = [png(white(1, channels=1)[0].astype(np.uint8))] * 5
    cases = {
        "a run-length compressed BMP": (compressed_bmp(),
                                        "an OS/2 or run-length compressed BMP is not served"),
        "a 50000x50000 PNG header": (big_png_header(50000, 50000),
                                     "declares more than 16,777,216 pixels"),
        "a palette BMP": (palette_bmp(), "a palette image) is not served: send it as PNG"),
        "junk bytes": (b"not an image", "Unknown image file format"),
        "an inverted drawing": (png((255 - white(1))[0].astype(np.uint8)),
                                "an image has a dark background"),
    }
    for bad, message in cases.values():
        assert message in refusal(protonet_signatures["encoded"],
                                  support_images=tf.constant([bad] + good[1:]),
                                  support_labels=LABELS, query_images=tf.constant(good))


def test_class_names_must_be_one_per_class(protonet_signatures):
    good = tf.constant([png(white(1)[0].astype(np.uint8))] * 5)
    answer = protonet_signatures["encoded_named"](
        support_images=good, support_labels=LABELS, query_images=good,
        support_class_names=tf.constant(list("abcde")))
    assert answer["class_names"].shape == (5,)
    assert "one name per class" in refusal(
        protonet_signatures["encoded_named"], support_images=good, support_labels=LABELS,
        query_images=good, support_class_names=tf.constant(list("abc")))


def test_the_adapted_export_answers_raw_images_with_its_class_names(tmp_path):
    learner = trained("maml")
    support = white(5)
    support[np.arange(5), 30, np.arange(5) * 5] = 0  # five different drawings
    pixels = images.to_model_pixels(support, OMNIGLOT)
    path = export.export_adapted(learner, pixels, LABELS, str(tmp_path / "adapted"),
                                 image_contract=OMNIGLOT, class_names=list("vwxyz"))
    signatures = tf.saved_model.load(path).signatures
    fast = learner.adapt(pixels, LABELS, training=False)
    expected = learner.independent_score(fast, Episode(pixels, LABELS, pixels,
                                                       tf.zeros([0], tf.int32)))
    for answer in (signatures["serving_default"](images=tf.constant(support)),
                   signatures["encoded"](images=tf.constant(
                       [png(x.astype(np.uint8)) for x in support]))):
        np.testing.assert_allclose(answer["probabilities"], learner.probabilities(expected),
                                   atol=1e-5)
        assert answer["class_names"].numpy().tolist() == [
            "vwxyz"[c].encode() for c in np.argmax(expected, axis=-1)]
