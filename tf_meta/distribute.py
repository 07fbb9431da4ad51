"""tf.distribute plumbing: strategies, the chief's and workers' folders, replica gradients.

A meta-batch's tasks are split across replicas and the meta-gradient is all-reduced. Everything
that knows about replicas lives here, so the learners and the training loop read as if on
one device.
"""

import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name, cpu_replicas=1):
    """The tf.distribute strategy `name`, one of STRATEGIES.

    default: one device. mirrored: every local GPU, or with none `cpu_replicas` logical
    CPU devices (to exercise the distributed path on a CPU machine; no faster there).
    multi_worker: MultiWorkerMirroredStrategy over the workers TF_CONFIG names.

    Must run before TensorFlow executes anything else: devices and the collective runtime
    are configured once per process.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multi_worker needs TF_CONFIG (see README, Distributed)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name != "mirrored":
        raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")
    if not tf.config.list_physical_devices("GPU") and cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    return tf.distribute.MirroredStrategy()


def is_chief(strategy):
    """Whether this process writes the run's results and exports (worker 0, or alone)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is None or resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0)


def worker_directory(strategy, directory):
    """`directory` for the chief; <directory>/worker_<i> for the other workers, whose
    checkpoints (which they must write too: saving is collective) would otherwise clash."""
    if is_chief(strategy):
        return directory
    return os.path.join(directory, f"worker_{strategy.cluster_resolver.task_id}")


def replica_gradients(grads, finish=None):
    """What one replica hands `optimizer.apply`, so the update is the meta-batch's mean.

    Each replica holds a slice of the meta-batch, and the optimizer sums the replicas'
    gradients: each is scaled so the sum is the mean. A `finish` that is not linear
    (clipping) must see that mean, so it is all-reduced first.

    Args:
      grads: this replica's mean gradients, parallel to the trainable variables.
      finish: None, or grads -> grads applied to the whole meta-batch's mean.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1 and finish is not None:
        grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, grads)
    if finish is not None:
        grads = finish(grads)
    if replicas > 1:
        grads = [g / replicas for g in grads]
    return grads


def reportable(results):
    """A train/test step's {name: scalar} as Keras's multi-worker reduction accepts it.

    Keras 3 reduces each output across workers with reduce(MEAN, axis=0), which fails on
    scalars (tensorflow/tensorflow#72388): give it [1], it returns [].
    """
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return {name: tf.reshape(value, [1]) for name, value in results.items()}
    return results


def build_optimizer_only(model, iterator=None, data_batch=None):
    """A replacement for Keras's private `Model._maybe_symbolic_build` (see MetaLearner).

    Under a tf.distribute strategy Keras's fit() would draw the first meta-batch from the
    training iterator (training would then start at the second one, and a resumed run would
    not see the episodes an uninterrupted one sees) and all-reduce its uint8 pixels (which
    MultiWorkerMirroredStrategy's collectives reject), only to build compiled metrics and
    the optimizer. A MetaLearner is built when constructed and keeps its own metrics: only
    the optimizer needs building, in the strategy's scope.
    """
    del iterator, data_batch
    if model.optimizer is not None and not model.optimizer.built:
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)
