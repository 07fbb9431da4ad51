"""Published training protocols: each algorithm's hyperparameters per dataset.

`train.py` fills every flag left unset from here, so `--algo=X` alone trains X the way its
paper did (except `steps`, which is a CPU budget; the papers' counts are noted).
"""

_MAML_OMNIGLOT = dict(  # Finn et al. 2017, 5-way 1-shot Omniglot; paper: 60,000 steps
    train_query_shots=15, meta_batch_size=32, meta_lr=1e-3, lr_decay_rate=1.0,
    inner_lr=0.4, inner_steps=1, test_inner_steps=3, steps=1000)

OMNIGLOT = {
    # Snell et al. 2017: 60-way training episodes, 5 queries, Adam 1e-3 halved every 2,000.
    "protonet": dict(train_ways=60, train_query_shots=5, meta_batch_size=1, meta_lr=1e-3,
                     lr_decay_every=2000, lr_decay_rate=0.5, steps=10000),
    "maml": _MAML_OMNIGLOT,
    "fomaml": _MAML_OMNIGLOT,
    # Nichol et al. 2018 / supervised-reptile run_omniglot: 10 training shots, Adam(β1=0)
    # 1e-3 inner, 5 steps on batches of 10, meta-batch 5, ε 1.0 -> 0; 50 test steps on
    # batches of 5. Paper: 100,000 steps.
    "reptile": dict(train_shots=10, train_query_shots=1, meta_batch_size=5, meta_lr=1.0,
                    inner_lr=1e-3, inner_steps=5, inner_batch_size=10, test_inner_steps=50,
                    test_inner_batch_size=5, steps=10000),
}

_MAML_SINUSOID = dict(  # Finn et al. 2017 §5.1: K = 10, meta-batch 25, α = 0.01; 70,000 steps
    shots=5, query_shots=100, train_shots=10, train_query_shots=10, meta_batch_size=25,
    meta_lr=1e-3, lr_decay_rate=1.0, inner_lr=0.01, inner_steps=1, test_inner_steps=10,
    steps=70000)

SINUSOID = {"maml": _MAML_SINUSOID, "fomaml": _MAML_SINUSOID}

COMMON = dict(ways=5, shots=1, query_shots=15, train_query_shots=5, meta_batch_size=1,
              meta_lr=1e-3, lr_decay_every=2000, lr_decay_rate=0.5, steps=10000)


def protocol(algo, dataset):
    """The hyperparameters for `algo` on `dataset`, falling back to COMMON."""
    table = SINUSOID if dataset == "sinusoid" else OMNIGLOT
    return {**COMMON, **table.get(algo, {})}
