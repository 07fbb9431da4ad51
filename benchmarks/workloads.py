"""The benchmark workloads: the PyTorch peer's configurations, their FLOP counts, builders.

Every benchmark process builds its learner and episodes here, so the training, pipeline and
peer runs of one algorithm measure the same episodes: synthetic Omniglot-shaped data (a pool
of 200 classes x 20 random 28x28 images, as ../shared/bench/peer_torch.py draws), Conv-4,
and the peer's episode sizes, inner steps, meta-batch (its DEFAULTS table) and meta rate.

A workload is only that peer data. The learner is the library's: `run_config` states the
workload as a `tf_meta.config.RunConfig`, and `build` makes and compiles the learner it
describes (`tf_meta.experiment`), so every other hyperparameter (MAML's inner rate 0.4,
Reptile's inner rate and batch, SNAIL's sequence length of the training episode, ...) is
the algorithm's declared default or its protocol's, as in a training run.
"""

from typing import NamedTuple


INPUT_SHAPE = (28, 28, 1)


class Workload(NamedTuple):
    """One training configuration: episode sizes, inner steps (0: none), meta-batch and the
    outer learning rate (Adam's; Reptile's meta step ε, which its optimizer anneals)."""

    ways: int
    shots: int
    query_shots: int
    inner_steps: int
    meta_batch_size: int
    meta_lr: float


# The peer's DEFAULTS table for the first five columns, and its meta rates (--meta-lr 1e-3
# for Adam, --meta-step 1.0 for Reptile). The peer's Reptile samples no queries; tf_meta's
# needs one per class (scored for the metrics only, 5 extra forward images per episode).
PEER_WORKLOADS = {
    "maml": Workload(5, 1, 15, 1, 32, 1e-3),
    "fomaml": Workload(5, 1, 15, 1, 32, 1e-3),
    "protonet": Workload(60, 5, 5, 0, 1, 1e-3),
    "reptile": Workload(5, 5, 1, 5, 5, 1.0),
}
PEER_ALGOS = tuple(PEER_WORKLOADS)


def algos():
    """Every algorithm of the registry, the peer's first: the order the harness runs them in."""
    from tf_meta.algorithms import ALGORITHMS
    return (*PEER_ALGOS, *(algo for algo in ALGORITHMS if algo not in PEER_WORKLOADS))


def protocol_workload(algo):
    """An algorithm without a peer trains its protocol's Omniglot training episodes (e.g.
    RelationNet 5-way 1-shot, 19 queries per class; MANN 5 classes x 10 labelled steps + 1
    query, 16 per batch; SNAIL 5-way 1-shot, 1 query, 32 per batch) at its protocol's rate."""
    from tf_meta.config import RunConfig
    config = RunConfig(algo=algo, protocol="tf_meta")
    return Workload(config.train_ways, config.train_shots, config.train_query_shots,
                    config.hyperparameters.get("inner_steps", 0), config.meta_batch_size,
                    config.meta_lr)


# GFLOP per episode of the peer's workloads, from ../shared/bench/README.md (torch's FLOP
# counter: MAML 166.9 GFLOP per meta-iteration of 32 episodes, FOMAML 148.5, a ProtoNet
# episode 34.8, Reptile 14.5 per meta-iteration of 5). Per episode, so a different
# meta-batch keeps the count exact; other episode sizes or inner steps have no count.
GFLOP_PER_EPISODE = {"maml": 166.9 / 32, "fomaml": 148.5 / 32, "protonet": 34.8,
                     "reptile": 14.5 / 5}
SGEMM_GFLOP_PER_S = 175.0  # two threads of MKL SGEMM on the 2-core benchmark machine

# The peer's schedule of the meta rate, as RunConfig settings: constant (no decay), except
# that the learner's own meta-optimizer may anneal over `steps` (Reptile: linearly to 0
# over 100,000 meta-iterations, the peer's --anneal-iters).
PEER_SCHEDULE = dict(steps=100000, lr_decay_every=100000, lr_decay_rate=1.0)


def define_workload_flags():
    """The flags that choose and time a workload, shared by train_throughput and run."""
    from absl import flags
    flags.DEFINE_integer("inner_steps", None, "inner steps (default: the workload's); only for "
                         "algorithms that declare the hyperparameter inner_steps")
    flags.DEFINE_integer("meta_batch_size", None, "episodes per meta-update (default: the "
                         "workload's)")
    flags.DEFINE_integer("parallel_tasks", 1, "tasks whose meta-gradients run at once; only "
                         "for algorithms that declare the hyperparameter parallel_tasks")
    flags.DEFINE_bool("xla", False, "compile the train step with XLA (jit_compile=True); off "
                      "by default: 16-18x slower for MAML on this CPU")
    flags.DEFINE_float("target_seconds", 20.0, "timed work per measurement, after warm-up")
    flags.DEFINE_integer("warmup", 3, "untimed meta-iterations (or meta-batches) first; the "
                         "first traces")


def workload(algo, inner_steps=None, meta_batch_size=None):
    """The peer's workload of `algo` (else its protocol's) with the given overrides (None
    keeps the workload's value)."""
    base = PEER_WORKLOADS.get(algo) or protocol_workload(algo)
    return base._replace(
        inner_steps=base.inner_steps if inner_steps is None else inner_steps,
        meta_batch_size=meta_batch_size or base.meta_batch_size)


def gflop_per_s(algo, config, episodes_per_s):
    """(GFLOP/s, fraction of SGEMM_GFLOP_PER_S) credited with the peer's FLOP count.

    None, None when `config` differs from the peer's workload in anything but the
    meta-batch (no FLOP count for it).
    """
    peer = PEER_WORKLOADS.get(algo)
    if algo not in GFLOP_PER_EPISODE or config._replace(
            meta_batch_size=peer.meta_batch_size) != peer:
        return None, None
    rate = GFLOP_PER_EPISODE[algo] * episodes_per_s
    return round(rate, 2), round(rate / SGEMM_GFLOP_PER_S, 4)


def run_config(algo, config, parallel_tasks=1):
    """The `tf_meta.config.RunConfig` that trains `config` (a Workload) as the peer does.

    Training and test episodes of the workload's sizes on the synthetic dataset, its
    meta-batch and meta rate on PEER_SCHEDULE; its inner steps and `parallel_tasks` for
    the algorithms that declare those hyperparameters. Everything else is left to the
    algorithm's declared defaults and its protocol.
    """
    from tf_meta.algorithms import learner_class
    from tf_meta.config import RunConfig
    algorithm = learner_class(algo)
    declared = algorithm.hyperparameter_names()
    schedule = {name: value for name, value in PEER_SCHEDULE.items()
                if name not in algorithm.UNUSED_SETTINGS}
    hyperparameters = {name: value for name, value in (("inner_steps", config.inner_steps),
                                                       ("parallel_tasks", parallel_tasks))
                       if name in declared}
    return RunConfig.from_settings(
        algo=algo, protocol="tf_meta", dataset="synthetic", ways=config.ways, shots=config.shots,
        train_ways=config.ways, train_shots=config.shots, train_query_shots=config.query_shots,
        meta_batch_size=config.meta_batch_size, meta_lr=config.meta_lr, **schedule,
        **hyperparameters)


def episodes(config, seed=0):
    """The endless training stream of `config`: meta-batches of Episodes from the pool."""
    import tf_meta
    pool = tf_meta.data.synthetic(200, 20, INPUT_SHAPE, noise=2.0)
    return tf_meta.make_episode_dataset(pool, config.ways, config.shots, config.query_shots,
                                        config.meta_batch_size, seed=seed)


def build(algo, config, parallel_tasks=1, xla=False):
    """A compiled learner for `config`, built as a run of `run_config(...)` builds it.

    XLA (`jit_compile=True`) is off unless asked for: on this CPU it made MAML 16-18x
    slower (docs/PERFORMANCE.md).
    """
    import keras

    from tf_meta import experiment
    settings = run_config(algo, config, parallel_tasks)
    keras.utils.set_random_seed(settings.seed)
    learner = experiment.compile_learner(experiment.make_learner(settings, INPUT_SHAPE),
                                         settings, jit_compile=bool(xla))
    learner.optimizer.build(learner.trainable_variables)  # as fit() does: one trace, not two
    return learner


def peer_command(peer_python, peer_script, algo, config, target_seconds, warmup):
    """The ../shared/bench/peer_torch.py command line that runs `config`."""
    return [peer_python, peer_script, "--algo", algo, "--inner-steps", str(config.inner_steps),
            "--meta-batch", str(config.meta_batch_size), "--target-seconds", str(target_seconds),
            "--warmup", str(warmup)]
