"""The benchmark workloads: the PyTorch peer's configurations, their FLOP counts, builders.

Every benchmark process builds its learner and episodes here, so the training, pipeline and
peer runs of one algorithm measure the same episodes: synthetic Omniglot-shaped data (a pool
of 200 classes x 20 random 28x28 images, as ../shared/bench/peer_torch.py draws), Conv-4,
and the peer's episode sizes, inner steps, meta-batch (its DEFAULTS table) and meta rate.
Two sets of workloads (`--workload`): "default", the peer's configurations (and, for the
algorithms the peer lacks, their protocol's), and "paper", the MAML and Reptile papers'
Omniglot configurations (PAPER_WORKLOADS), which the peer runs with `--net strided`.

A workload is only that peer data. The learner is the library's: `run_config` states the
workload as a `tf_meta.config.RunConfig`, and `build` makes and compiles the learner it
describes (`tf_meta.experiment`), so every other hyperparameter (MAML's inner rate 0.4,
Reptile's inner rate and batch, SNAIL's sequence length of the training episode, ...) is
the algorithm's declared default or its protocol's, as in a training run.
"""

from typing import NamedTuple, Optional


INPUT_SHAPE = (28, 28, 1)

# tf_meta.precision.PRECISIONS, named here without importing TensorFlow: the harness's
# parent process and the serving timer's flags need them (a test checks they agree).
PRECISIONS = ("float32", "bfloat16", "float16")


class Workload(NamedTuple):
    """One training configuration: episode sizes, inner steps (0: none), meta-batch, the
    outer learning rate (Adam's; Reptile's meta step ε, which its optimizer anneals) and
    the image network (a name of tf_meta.backbones.NETWORKS; None: the algorithm's own,
    Conv-4 with max-pooling for the peer's four)."""

    ways: int
    shots: int
    query_shots: int
    inner_steps: int
    meta_batch_size: int
    meta_lr: float
    network: Optional[str] = None


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

# The papers' Omniglot configurations (tf_meta's --protocol=paper, tf_meta/protocols.py):
# MAML and first-order MAML 5-way 1-shot with 1 query per class, meta-batch 32, 1 inner
# step (lr 0.4, the learner's default) on cbfinn/maml's network; Reptile in the peer's
# shape (5-shot training episodes; the paper's protocol trains on 10) on supervised-reptile's
# network. The inner loops train as the peer's do (MAML adapts BatchNorm's offset and scale
# and averages the support losses: the learner's defaults), not as --protocol=paper does
# (BatchNorm frozen, losses summed); the compute is the same but for BatchNorm's few fast
# weights. What still differs from the peer: NETWORK_DIFFERENCES, `peer_differences`.
PAPER_WORKLOADS = {
    "maml": Workload(5, 1, 1, 1, 32, 1e-3, "conv4_strided_mean"),
    "fomaml": Workload(5, 1, 1, 1, 32, 1e-3, "conv4_strided_mean"),
    "reptile": PEER_WORKLOADS["reptile"]._replace(network="conv4_strided"),
}
WORKLOADS = {"default": PEER_WORKLOADS, "paper": PAPER_WORKLOADS}

# The peer's --net for tf_meta's network, and what differs between the two (none for the
# max-pool Conv-4). The strided networks' FLOPs differ by under 0.1% (the head's inputs).
PEER_NETS = {None: "maxpool", "conv4": "maxpool", "conv4_strided": "strided",
             "conv4_strided_mean": "strided"}
NETWORK_DIFFERENCES = {
    "conv4_strided": "network: tf_meta's conv4_strided (supervised-reptile's) flattens the "
                     "2x2x64 maps into 256 features before the head; the peer's --net strided "
                     "averages them over space into 64",
    "conv4_strided_mean": "network: tf_meta's conv4_strided_mean (cbfinn/maml's) has BatchNorm "
                          "without a scale (offset only); the peer's --net strided has "
                          "nn.BatchNorm2d's scale and offset",
}
# tf_meta's precision -> the peer's flags for the same arithmetic. float16 has none: the
# peer's mixed precision on a CPU is torch.autocast in bfloat16 only.
PEER_PRECISION_FLAGS = {"float32": [], "bfloat16": ["--bf16"]}


def algos(name="default"):
    """The algorithms of workload set `name`, in the order the harness runs them: for
    "default" every algorithm of the registry, the peer's first."""
    if name != "default":
        return tuple(WORKLOADS[name])
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
    flags.DEFINE_enum("workload", "default", list(WORKLOADS), "the workloads: default (the "
                      "peer's configurations; the protocol's for algorithms the peer lacks) or "
                      "paper (the MAML and Reptile papers' Omniglot networks and episodes: "
                      f"{', '.join(PAPER_WORKLOADS)})")
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


def workload(algo, inner_steps=None, meta_batch_size=None, name="default"):
    """The workload of `algo` in set `name` (default: the peer's, else its protocol's) with
    the given overrides (None keeps the workload's value).

    Raises:
      ValueError: one line, a set without a workload for `algo`.
    """
    if name == "default":
        base = PEER_WORKLOADS.get(algo) or protocol_workload(algo)
    elif algo in WORKLOADS[name]:
        base = WORKLOADS[name][algo]
    else:
        raise ValueError(f"--workload={name} has no {algo}; its algorithms: "
                         f"{', '.join(WORKLOADS[name])}")
    return base._replace(
        inner_steps=base.inner_steps if inner_steps is None else inner_steps,
        meta_batch_size=meta_batch_size or base.meta_batch_size)


def flagged_workload(algo):
    """The workload the flags --workload, --meta_batch_size and --inner_steps (where the
    process defines it) choose for `algo`.

    Raises:
      absl.app.UsageError: one line, --workload has no `algo`.
    """
    from absl import app, flags
    values = flags.FLAGS
    inner_steps = values.inner_steps if "inner_steps" in values else None
    try:
        return workload(algo, inner_steps, values.meta_batch_size, values.workload)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def gflop_per_s(algo, config, episodes_per_s, precision="float32"):
    """(GFLOP/s, fraction of SGEMM_GFLOP_PER_S) credited with the peer's FLOP count.

    None, None when `config` differs from the peer's workload in anything but the
    meta-batch (no FLOP count for it); the fraction is None in a low precision, whose
    ceiling is not float32 SGEMM's.
    """
    peer = PEER_WORKLOADS.get(algo)
    if algo not in GFLOP_PER_EPISODE or config._replace(
            meta_batch_size=peer.meta_batch_size) != peer:
        return None, None
    rate = GFLOP_PER_EPISODE[algo] * episodes_per_s
    return round(rate, 2), (round(rate / SGEMM_GFLOP_PER_S, 4) if precision == "float32"
                            else None)


def run_config(algo, config, parallel_tasks=1, precision="float32"):
    """The `tf_meta.config.RunConfig` that trains `config` (a Workload) as the peer does.

    Training and test episodes of the workload's sizes on the synthetic dataset, its
    network, meta-batch and meta rate on PEER_SCHEDULE, in `precision`; its inner steps and
    `parallel_tasks` for the algorithms that declare those hyperparameters. Everything else
    is left to the algorithm's declared defaults and its protocol.
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
        meta_batch_size=config.meta_batch_size, meta_lr=config.meta_lr, network=config.network,
        precision=precision, **schedule, **hyperparameters)


def episodes(config, seed=0):
    """The endless training stream of `config`: meta-batches of Episodes from the pool."""
    import tf_meta
    pool = tf_meta.data.synthetic(200, 20, INPUT_SHAPE, noise=2.0)
    return tf_meta.make_episode_dataset(pool, config.ways, config.shots, config.query_shots,
                                        config.meta_batch_size, seed=seed)


def timed_calls(step, batches, seconds, at_least=3):
    """(calls, elapsed seconds) of `step(batches)` (a tf.function meta-training or test step)
    called for at least `seconds` and `at_least` times, the last call's result fetched
    before the clock stops."""
    import time

    import tensorflow as tf
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < at_least:
        result = step(batches)
        calls += 1
    tf.nest.flatten(result)[0].numpy()  # the last step has finished
    return calls, time.perf_counter() - start


def steps_per_second(step, batches, seconds, at_least=3):
    """Calls per second of `step(batches)`, timed as `timed_calls` times it."""
    calls, elapsed = timed_calls(step, batches, seconds, at_least)
    return calls / elapsed


def build(algo, config, parallel_tasks=1, xla=False, precision="float32"):
    """A compiled learner for `config` in `precision`, built as a run of `run_config(...)`
    builds it.

    XLA (`jit_compile=True`) is off unless asked for: on this CPU it made MAML 16-18x
    slower (docs/PERFORMANCE.md).
    """
    import keras

    from tf_meta import experiment
    settings = run_config(algo, config, parallel_tasks, precision)
    keras.utils.set_random_seed(settings.seed)
    learner = experiment.compile_learner(experiment.make_learner(settings, INPUT_SHAPE),
                                         settings, jit_compile=bool(xla))
    learner.optimizer.build(learner.trainable_variables)  # as fit() does: one trace, not two
    return learner


def peer_command(peer_python, peer_script, algo, config, target_seconds, warmup,
                 precision="float32"):
    """The ../shared/bench/peer_torch.py command line that runs `config` in `precision`;
    None in float16, which the peer has no counterpart of (PEER_PRECISION_FLAGS).

    Episode sizes and the network are passed, not left to the peer's defaults; the query
    count is not for Reptile, whose peer samples no queries whatever --queries says.
    """
    if precision not in PEER_PRECISION_FLAGS:
        return None
    queries = [] if algo == "reptile" else ["--queries", str(config.query_shots)]
    return [peer_python, peer_script, "--algo", algo, "--ways", str(config.ways),
            "--shots", str(config.shots), *queries, "--inner-steps", str(config.inner_steps),
            "--meta-batch", str(config.meta_batch_size), "--net", PEER_NETS[config.network],
            *PEER_PRECISION_FLAGS[precision], "--target-seconds", str(target_seconds),
            "--warmup", str(warmup)]


def peer_differences(algo, config, precision="float32"):
    """What differs between tf_meta's run of `config` in `precision` and the peer's, one
    sentence each (the compare record's "differences")."""
    differences = []
    if algo == "reptile":
        differences.append("queries: the peer's Reptile samples none; tf_meta's scores "
                           f"{config.query_shots} per class for its metrics only")
    if config.network in NETWORK_DIFFERENCES:
        differences.append(NETWORK_DIFFERENCES[config.network])
    if precision == "bfloat16":
        differences.append("bfloat16: the peer runs each meta-iteration under "
                           "torch.autocast('cpu', bfloat16), which picks the ops computed in "
                           "bfloat16; tf_meta's networks compute in Keras's mixed_bfloat16 "
                           "policy, the learner's own arithmetic in float32")
    return differences
