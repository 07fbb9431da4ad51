"""One meta-update under the default strategy and under MirroredStrategy on 2 logical CPUs.

Usage: python distributed_step.py ALGO [ALGO ...] -> one JSON line per algorithm:
  {"algo": ..., "max_abs_diff": largest |mirrored − reference| over all variables, ...}
Reference: the default strategy on the whole meta-batch; for Reptile, whose replicas each
carry the inner Adam state through their own half of the meta-batch, the mean of two
default-strategy runs on the halves. Run in its own process: the logical devices must be
configured before TensorFlow starts.
"""

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_meta  # noqa: E402
from tf_meta import data  # noqa: E402

HYPER = {"maml": dict(inner_steps=2, inner_lr=0.4), "fomaml": dict(inner_steps=1, inner_lr=0.4),
         "reptile": dict(inner_steps=2, inner_batch_size=5, inner_lr=1e-3),
         "mann": dict(controller_units=16, memory_slots=8, memory_width=4, read_heads=2)}


def one_update(algo, input_shape, strategy, meta_batch):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        learner = tf_meta.build_learner(algo, input_shape, ways=5, **HYPER.get(algo, {}))
        # SGD, not Adam: Adam's first step is about ±rate wherever a gradient is ~0, so
        # it would turn float round-off into differences of 2 × rate.
        learner.compile(optimizer=learner.meta_optimizer(0.5, 10, 10, 1.0)
                        if algo == "reptile" else keras.optimizers.SGD(0.05))
    learner.fit(tf.data.Dataset.from_tensors(meta_batch).repeat(), steps_per_epoch=1,
                epochs=1, verbose=0)
    return [w.numpy() for w in learner.weights]


def main(algos):
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    default = tf.distribute.get_strategy()
    for name in algos:
        algo, images = name.split(":")[0], name.endswith(":images")
        input_shape = (28, 28, 1) if images else (16,)
        pool = data.synthetic(20, 8, input_shape, noise=2.0)
        meta_batch = next(iter(data.make_episode_dataset(pool, 5, 2, 2, 4, seed=0)))
        after = one_update(algo, input_shape, mirrored, meta_batch)
        if algo == "reptile":
            halves = [one_update(algo, input_shape, default,
                                 tf.nest.map_structure(lambda t: t[i:i + 2], meta_batch))
                      for i in (0, 2)]
            expected = [(a + b) / 2 for a, b in zip(*halves)]
        else:
            expected = one_update(algo, input_shape, default, meta_batch)
        print(json.dumps({"algo": name, "variables": len(after), "max_abs_diff": max(
            float(np.max(np.abs(a - e))) for a, e in zip(after, expected))}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
