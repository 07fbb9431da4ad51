"""The benchmark workloads: the PyTorch peer's configurations, their FLOP counts, builders.

Every benchmark process builds its learner and episodes here, so the training, pipeline and
peer runs of one algorithm measure the same episodes: synthetic Omniglot-shaped data (a pool
of 200 classes x 20 random 28x28 images, as ../shared/bench/peer_torch.py draws), Conv-4,
and the peer's episode sizes and meta-batch (its DEFAULTS table).
"""

from typing import NamedTuple


class Workload(NamedTuple):
    """One training configuration: episode sizes, inner steps (0: none) and meta-batch."""

    ways: int
    shots: int
    query_shots: int
    inner_steps: int
    meta_batch_size: int


# The peer's DEFAULTS table for the first four. The peer's Reptile samples no queries;
# tf_meta's needs one per class (scored for the metrics only, 5 extra forward images per
# episode). No peer for the last three: the training episodes of tf_meta's protocols,
# RelationNet 5-way 1-shot with 19 queries per class; MANN 5 classes x 10 labelled steps +
# 1 query each, 16 per batch; SNAIL 5-way 1-shot, 1 query per class, 32 per batch.
WORKLOADS = {
    "maml": Workload(5, 1, 15, 1, 32),
    "fomaml": Workload(5, 1, 15, 1, 32),
    "protonet": Workload(60, 5, 5, 0, 1),
    "reptile": Workload(5, 5, 1, 5, 5),
    "relationnet": Workload(5, 1, 19, 0, 1),
    "mann": Workload(5, 10, 1, 0, 16),
    "snail": Workload(5, 1, 1, 0, 32),
}
ALGOS = tuple(WORKLOADS)  # the order the harness runs them in
PEER_ALGOS = ("maml", "fomaml", "protonet", "reptile")

# GFLOP per episode of the peer's workloads, from ../shared/bench/README.md (torch's FLOP
# counter: MAML 166.9 GFLOP per meta-iteration of 32 episodes, FOMAML 148.5, a ProtoNet
# episode 34.8, Reptile 14.5 per meta-iteration of 5). Per episode, so a different
# meta-batch keeps the count exact; other episode sizes or inner steps have no count.
GFLOP_PER_EPISODE = {"maml": 166.9 / 32, "fomaml": 148.5 / 32, "protonet": 34.8,
                     "reptile": 14.5 / 5}
SGEMM_GFLOP_PER_S = 175.0  # two threads of MKL SGEMM on the 2-core benchmark machine


def workload(algo, inner_steps=None, meta_batch_size=None):
    """WORKLOADS[algo] with the given overrides (None keeps the peer's value)."""
    base = WORKLOADS[algo]
    return base._replace(
        inner_steps=base.inner_steps if inner_steps is None else inner_steps,
        meta_batch_size=meta_batch_size or base.meta_batch_size)


def gflop_per_s(algo, config, episodes_per_s):
    """(GFLOP/s, fraction of SGEMM_GFLOP_PER_S) credited with the peer's FLOP count.

    None, None when `config` differs from the peer's workload in anything but the
    meta-batch (no FLOP count for it).
    """
    peer = WORKLOADS[algo]
    if algo not in GFLOP_PER_EPISODE or config._replace(
            meta_batch_size=peer.meta_batch_size) != peer:
        return None, None
    rate = GFLOP_PER_EPISODE[algo] * episodes_per_s
    return round(rate, 2), round(rate / SGEMM_GFLOP_PER_S, 4)


def hyperparameters(algo, config, parallel_tasks=1):
    """Constructor arguments of the learner that trains `config` as the peer does."""
    if algo in ("maml", "fomaml"):
        return dict(inner_lr=0.4, inner_steps=config.inner_steps, parallel_tasks=parallel_tasks)
    if algo == "reptile":
        return dict(inner_lr=1e-3, inner_steps=config.inner_steps, inner_batch_size=10)
    if algo == "snail":
        return dict(sequence_length=config.ways * config.shots + 1)
    return {}


def episodes(config, seed=0):
    """The endless training stream of `config`: meta-batches of Episodes from the pool."""
    import tf_meta
    pool = tf_meta.data.synthetic(200, 20, (28, 28, 1), noise=2.0)
    return tf_meta.make_episode_dataset(pool, config.ways, config.shots, config.query_shots,
                                        config.meta_batch_size, seed=seed)


def build(algo, config, parallel_tasks=1, xla=False):
    """A compiled learner for `config`: the peer's optimizer (Adam 1e-3; Reptile SGD(1.0)).

    XLA (`jit_compile=True`) is off unless asked for: on this CPU it made MAML 16-18x
    slower (docs/PERFORMANCE.md).
    """
    import keras

    import tf_meta
    keras.utils.set_random_seed(0)
    learner = tf_meta.build_learner(algo, (28, 28, 1), ways=config.ways,
                                    **hyperparameters(algo, config, parallel_tasks))
    meta_lr = 1.0 if algo == "reptile" else 1e-3
    learner.compile(optimizer=learner.meta_optimizer(meta_lr, 100000, 100000, 1.0),
                    jit_compile=bool(xla))
    learner.optimizer.build(learner.trainable_variables)  # as fit() does: one trace, not two
    return learner


def peer_command(peer_python, peer_script, algo, config, target_seconds, warmup):
    """The ../shared/bench/peer_torch.py command line that runs `config`."""
    return [peer_python, peer_script, "--algo", algo, "--inner-steps", str(config.inner_steps),
            "--meta-batch", str(config.meta_batch_size), "--target-seconds", str(target_seconds),
            "--warmup", str(warmup)]
