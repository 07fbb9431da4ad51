"""A Conv-4 forward and backward in float32 and bfloat16, BatchNorm three ways: which is fast.

The four conv3x3 -> BatchNorm -> ReLU -> max-pool blocks of Conv-4 on N 28x28 images, as
plain TensorFlow ops in a tf.function, timed alternating in one process (best of 5 rounds
of 3 calls):

  fused  tf.compat.v1.nn.fused_batch_norm on the maps as they are (bfloat16 maps, float32
         scale and offset: what `backbones.BatchNormalization` runs under a mixed policy)
  f32    the maps cast to float32, moments and normalisation there, cast back (what
         Keras's BatchNormalization does with bfloat16 inputs)
  lowp   moments and normalisation in bfloat16 itself
  none   no BatchNorm (the convolutions alone)

  python -m benchmarks.batchnorm_precision --images=360
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("images", 360, "images per batch (ProtoNet's 60-way 1-shot + 5 queries)")


def main(argv):
    del argv
    import tensorflow as tf

    images = tf.random.normal([FLAGS.images, 28, 28, 1])

    def make(dtype, norm):
        kernels = [tf.Variable(tf.random.normal([3, 3, 1 if i == 0 else 64, 64]) * 0.1)
                   for i in range(4)]
        scales = [tf.Variable(tf.ones([64])) for _ in range(4)]
        offsets = [tf.Variable(tf.zeros([64])) for _ in range(4)]

        def batch_norm(h, scale, offset):
            if norm == "fused":
                return tf.compat.v1.nn.fused_batch_norm(h, scale, offset, is_training=True)[0]
            if norm == "f32":
                h = tf.cast(h, tf.float32)
                mean, variance = tf.nn.moments(h, [0, 1, 2])
                return tf.cast(tf.nn.batch_normalization(h, mean, variance, offset, scale, 1e-3),
                               dtype)
            if norm == "lowp":
                mean, variance = tf.nn.moments(h, [0, 1, 2])
                return tf.nn.batch_normalization(h, mean, variance, tf.cast(offset, dtype),
                                                 tf.cast(scale, dtype), 1e-3)
            return h

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                h = tf.cast(x, dtype)
                for kernel, scale, offset in zip(kernels, scales, offsets):
                    h = tf.nn.conv2d(h, tf.cast(kernel, dtype), 1, "SAME")
                    h = tf.nn.max_pool2d(tf.nn.relu(batch_norm(h, scale, offset)), 2, 2, "VALID")
                loss = tf.reduce_sum(tf.cast(h, tf.float32) ** 2)
            return tape.gradient(loss, kernels + scales + offsets)

        step(images)
        return step

    steps = {(dtype.name, norm): make(dtype, norm)
             for dtype, norm in [(tf.float32, "fused"), (tf.bfloat16, "fused"),
                                 (tf.bfloat16, "f32"), (tf.bfloat16, "lowp"),
                                 (tf.float32, "none"), (tf.bfloat16, "none")]}
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(5):
        for key, step in steps.items():
            start = time.perf_counter()
            for _ in range(3):
                grads = step(images)
            float(grads[0][0, 0, 0, 0])
            best[key] = min(best[key], (time.perf_counter() - start) / 3)
    for (dtype, norm), seconds in best.items():
        print(f"{dtype:9s} BatchNorm {norm:6s} {seconds * 1000:7.1f} ms")


if __name__ == "__main__":
    app.run(main)
