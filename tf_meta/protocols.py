"""Published training protocols: each algorithm's run settings per dataset.

`RunConfig` fills every setting left unset from `protocol(algo, dataset, ...)`, so
`--algo=X` alone trains X the way its paper did (except `steps`, which is a CPU budget; the
papers' counts are noted). A protocol is COMMON, then the algorithm's declared
hyperparameter defaults (`MetaLearner.HYPERPARAMETERS`, each citing its paper), then the
dataset's rows below, which list only what differs: each value is written once.
"""

from tf_meta.algorithms import learner_class

# Relation Networks' training queries per class for (train ways, train shots).
RELATIONNET_QUERIES = {(5, 1): 19, (5, 5): 15, (20, 1): 10, (20, 5): 5}

# Finn et al. 2017, 5-way 1-shot Omniglot; paper: 60,000 steps.
_MAML_OMNIGLOT = dict(train_query_shots=15, meta_batch_size=32, meta_lr=1e-3,
                      lr_decay_rate=1.0, steps=1000)

OMNIGLOT = {
    # Snell et al. 2017: 60-way training episodes, 5 queries, Adam 1e-3 halved every 2,000.
    "protonet": dict(train_ways=60, train_query_shots=5, meta_batch_size=1, meta_lr=1e-3,
                     lr_decay_every=2000, lr_decay_rate=0.5, steps=10000),
    "maml": _MAML_OMNIGLOT,
    "fomaml": _MAML_OMNIGLOT,
    # Nichol et al. 2018 / supervised-reptile run_omniglot: 10 training shots, meta-batch
    # 5, ε 1.0 -> 0 (the inner loop: Reptile.HYPERPARAMETERS). Paper: 100,000 steps.
    "reptile": dict(train_shots=10, train_query_shots=1, meta_batch_size=5, meta_lr=1.0,
                    steps=10000),
    # Sung et al. 2018 / LearningToCompare_FSL: one episode per step, Adam 1e-3 halved every
    # 100,000 episodes (reference: 1,000,000 episodes); queries per class by task below.
    "relationnet": dict(meta_batch_size=1, meta_lr=1e-3, lr_decay_every=100000,
                        lr_decay_rate=0.5, steps=10000,
                        train_query_shots=lambda ways, shots: RELATIONNET_QUERIES.get(
                            (ways, shots), COMMON["train_query_shots"])),
    # Santoro et al. 2016: episodes of 5 classes x 10 samples (here the support set, labels
    # one step late) and meta-batches of 16 as the reference code; Adam 1e-3 is the
    # reference code's, not checked in the paper. Paper: 100,000 episodes. (The memory:
    # MANN.HYPERPARAMETERS.)
    "mann": dict(train_shots=10, train_query_shots=1, meta_batch_size=16, meta_lr=1e-3,
                 lr_decay_rate=1.0, steps=10000),
    # Mishra et al. 2018: one query per sequence of T = N·K + 1, the TC blocks covering the
    # training sequence (`sequence_length`); 32 episodes per batch and Adam 1e-4 are the
    # snail-pytorch reimplementation's, not checked in the paper.
    "snail": dict(train_query_shots=1, meta_batch_size=32, meta_lr=1e-4, lr_decay_rate=1.0,
                  steps=10000, sequence_length=lambda ways, shots: ways * shots + 1),
}

_MAML_SINUSOID = dict(  # Finn et al. 2017 §5.1: K = 10, meta-batch 25, α = 0.01; 70,000 steps
    shots=5, query_shots=100, train_shots=10, train_query_shots=10, meta_batch_size=25,
    meta_lr=1e-3, lr_decay_rate=1.0, inner_lr=0.01, test_inner_steps=10, steps=70000)

SINUSOID = {"maml": _MAML_SINUSOID, "fomaml": _MAML_SINUSOID}

COMMON = dict(ways=5, shots=1, query_shots=15, train_query_shots=5, meta_batch_size=1,
              meta_lr=1e-3, lr_decay_every=2000, lr_decay_rate=0.5, steps=10000)


def protocol(algo, dataset, train_ways=None, train_shots=None):
    """The run settings and hyperparameters for `algo` on `dataset`.

    COMMON, then the algorithm's hyperparameter defaults, then the dataset's table (the
    sinusoid table for dataset "sinusoid", the Omniglot one otherwise). A value that
    depends on the training task (Relation Networks' queries per class, SNAIL's sequence
    length) is a function of (train ways, train shots), evaluated here with
    `train_ways`/`train_shots` (default: the protocol's ways/shots).

    Raises:
      ValueError: unknown algo.
    """
    defaults = {h.name: h.default for h in learner_class(algo).HYPERPARAMETERS}
    table = SINUSOID if dataset == "sinusoid" else OMNIGLOT
    result = {**COMMON, **defaults, **table.get(algo, {})}
    task = (train_ways or result["ways"], train_shots or result["shots"])
    return {name: value(*task) if callable(value) else value for name, value in result.items()}
