"""Training and test protocols: each algorithm's run settings per dataset, the papers' cited.

`RunConfig` fills every setting left unset from `protocol(name, algo, dataset, ...)`:

- "paper" (the default on Omniglot, `datasets.Dataset.protocol`): the paper's Omniglot
  settings, training and test, each value `Cited` with its source (paper section or
  reference-code file). A setting the paper row does not name takes tf_meta's value, and
  `sources` says so ("tf_meta's").
- "tf_meta" (the default on image folders and synthetic data): tf_meta's own settings,
  which the budget runs of docs/RESULTS.md used (the max-pool Conv-4 for MAML and Reptile,
  15 queries per class, 1,000 test episodes). A run folder written before `--protocol`
  existed (no such line in its flags.txt) used these; `experiment` refuses to continue it
  under another protocol. On data whose splits are smaller than its episodes (a user's
  image folder), `fit_to_splits` lowers the episode sizes left unset to what they hold.

A protocol is COMMON, then the algorithm's declared hyperparameter defaults
(`MetaLearner.HYPERPARAMETERS`), then the tf_meta row, then (for "paper") the paper row.
`python -m tf_meta.protocols` prints every value with its source (docs/PROTOCOLS.md).
"""

from typing import Any, NamedTuple

from tf_meta.algorithms import ALGORITHMS, learner_class

PROTOCOLS = ("paper", "tf_meta")


class Cited(NamedTuple):
    """A protocol value and where it comes from: a paper section or a reference-code file."""

    value: Any
    source: str


def _shots(ways, shots):
    """K queries per class: the shots of the training task."""
    del ways
    return shots


# Relation Networks' training queries per class for (train ways, train shots).
RELATIONNET_QUERIES = {(5, 1): 19, (5, 5): 15, (20, 1): 10, (20, 5): 5}

COMMON = dict(ways=5, shots=1, query_shots=15, train_query_shots=5, meta_batch_size=1,
              meta_lr=1e-3, lr_decay_every=2000, lr_decay_rate=0.5, steps=10000,
              eval_episodes=1000)

# tf_meta's protocol: what the budget runs used. Step counts are CPU budgets.
_MAML_TF_META = dict(train_query_shots=15, meta_batch_size=32, meta_lr=1e-3, lr_decay_rate=1.0,
                     steps=1000)
TF_META = {
    "protonet": dict(train_ways=60, train_query_shots=5, meta_batch_size=1, meta_lr=1e-3,
                     lr_decay_every=2000, lr_decay_rate=0.5, steps=10000),
    "maml": _MAML_TF_META,
    "fomaml": _MAML_TF_META,
    "reptile": dict(train_shots=10, train_query_shots=1, meta_batch_size=5, meta_lr=1.0,
                    steps=10000),
    "relationnet": dict(meta_batch_size=1, meta_lr=1e-3, lr_decay_every=100000,
                        lr_decay_rate=0.5, steps=10000,
                        train_query_shots=lambda ways, shots: RELATIONNET_QUERIES.get(
                            (ways, shots), COMMON["train_query_shots"])),
    "mann": dict(train_shots=10, train_query_shots=1, meta_batch_size=16, meta_lr=1e-3,
                 lr_decay_rate=1.0, steps=10000),
    "snail": dict(train_query_shots=1, meta_batch_size=32, meta_lr=1e-4, lr_decay_rate=1.0,
                  steps=10000, sequence_length=lambda ways, shots: ways * shots + 1),
}

_FINN = "Finn et al. 2017 App. A.1"
_CBFINN = "cbfinn/maml"
_MAML_PAPER_5 = dict(
    network=Cited("conv4_strided_mean", f"{_CBFINN} utils.py conv_block (stride 2, max_pool "
                  "off), maml.py forward_conv (mean over space); Finn et al. §5.2"),
    adapt_batchnorm=Cited(False, f"{_CBFINN} maml.py: the inner loop updates `weights`, which "
                          "hold no batch-norm variable"),
    sum_inner_loss=Cited(True, f"{_CBFINN} utils.py xent (/ update_batch_size), summed by "
                         "tf.gradients in maml.py"),
    inner_lr=Cited(0.4, f"{_FINN}; {_CBFINN} main.py README command"),
    inner_steps=Cited(1, _FINN),
    test_inner_steps=Cited(3, f"{_FINN} (the code evaluates up to 10: main.py "
                           "test_num_updates)"),
    meta_batch_size=Cited(32, _FINN),
    meta_lr=Cited(1e-3, f"{_CBFINN} main.py meta_lr, Adam"),
    lr_decay_rate=Cited(1.0, f"{_CBFINN} maml.py: AdamOptimizer(meta_lr), no decay"),
    train_query_shots=Cited(_shots, f"{_CBFINN} main.py: DataGenerator(update_batch_size * 2) "
                            "(15 queries per class are MiniImagenet's)"),
    query_shots=Cited(_shots, f"{_CBFINN} main.py: the same generator at test"),
    eval_episodes=Cited(600, f"{_CBFINN} main.py NUM_TEST_POINTS"),
    transductive=Cited(True, f"{_CBFINN} utils.py normalize: batch_norm in training mode "
                       "at test"),
    steps=Cited(60000, f"{_FINN} (60,000 iterations)"),
)
_MAML_PAPER = {
    5: _MAML_PAPER_5,
    20: {**_MAML_PAPER_5,
         "inner_lr": Cited(0.1, f"{_FINN}; {_CBFINN} main.py 20-way README command"),
         "inner_steps": Cited(5, _FINN),
         "test_inner_steps": Cited(5, f"{_FINN} (trained and evaluated with 5 steps)"),
         "meta_batch_size": Cited(16, _FINN)},
}
_NICHOL = "Nichol et al. 2018"
_REPTILE = "openai/supervised-reptile"
# The archived README's commands (5d5589c); an earlier README (0487665) listed other,
# searched values for the same runs (e.g. 1-shot 5-way: --inner-batch 25 --inner-iters 3).
_RR = f"{_REPTILE} README@5d5589c"
_REPTILE_PAPER_5 = dict(
    network=Cited("conv4_strided", f"{_REPTILE} supervised_reptile/models.py OmniglotModel"),
    train_shots=Cited(10, f"{_RR} commands (--train-shots 10)"),
    train_query_shots=Cited(1, "tf_meta's: scored for the metrics only (the reference samples "
                            "no training queries)"),
    meta_batch_size=Cited(5, f"{_RR} commands (--meta-batch 5)"),
    meta_lr=Cited(1.0, f"{_RR} commands (--meta-step 1, annealed to "
                  "--meta-step-final 0)"),
    inner_lr=Cited(1e-3, f"{_RR} commands; Adam β1 = 0 (models.py)"),
    inner_steps=Cited(5, f"{_RR} commands (--inner-iters 5)"),
    inner_batch_size=Cited(10, f"{_RR} commands (--inner-batch 10)"),
    test_inner_steps=Cited(50, f"{_RR} commands (--eval-iters 50)"),
    test_inner_batch_size=Cited(5, f"{_RR} commands (--eval-batch 5)"),
    query_shots=Cited(1, f"{_REPTILE} supervised_reptile/reptile.py _split_train_test "
                      "(test_shots=1)"),
    eval_episodes=Cited(10000, f"{_REPTILE} supervised_reptile/args.py --eval-samples"),
    transductive=Cited(True, f"{_NICHOL} report both; {_RR} ckpt_o15t command "
                       "(--transductive)"),
    steps=Cited(100000, f"{_RR} commands (--meta-iters 100000)"),
)
_REPTILE_PAPER = {
    5: _REPTILE_PAPER_5,
    20: {**_REPTILE_PAPER_5,
         "inner_lr": Cited(5e-4, f"{_RR} 20-way commands (--learning-rate 0.0005)"),
         "inner_steps": Cited(10, f"{_RR} 20-way commands (--inner-iters 10)"),
         "inner_batch_size": Cited(20, f"{_RR} 20-way commands (--inner-batch 20)"),
         "test_inner_batch_size": Cited(10, f"{_RR} 20-way commands "
                                        "(--eval-batch 10)"),
         "steps": Cited(200000, f"{_RR} 20-way commands (--meta-iters 200000)")},
}
_SUNG = "floodsung/LearningToCompare_FSL omniglot"
_TRAIN = f"{_SUNG}/omniglot_train_one_shot.py, _few_shot.py"  # the same values in both
_TEST = f"{_SUNG}/omniglot_test_one_shot.py, _few_shot.py"
_RELATIONNET_PAPER = dict(
    train_query_shots=Cited(lambda ways, shots: RELATIONNET_QUERIES.get(
        (ways, shots), COMMON["train_query_shots"]), f"{_SUNG} README commands (-b)"),
    meta_batch_size=Cited(1, f"{_TRAIN}: one episode per step"),
    meta_lr=Cited(1e-3, f"{_TRAIN} LEARNING_RATE, Adam"),
    lr_decay_every=Cited(100000, f"{_TRAIN} StepLR step_size"),
    lr_decay_rate=Cited(0.5, f"{_TRAIN} StepLR gamma"),
    clip_norm=Cited(0.5, f"{_TRAIN} clip_grad_norm"),
    reference_init=Cited(True, f"{_TRAIN} weights_init"),
    query_shots=Cited(_shots, f"{_TEST}: test_num = SAMPLE_NUM_PER_CLASS"),
    eval_episodes=Cited(10000, f"{_TEST}: 10 x 1,000 episodes"),
    transductive=Cited(True, f"{_SUNG}: no .eval() call, batch statistics at test"),
    steps=Cited(1000000, f"{_TRAIN} EPISODE"),
)
_SNELL = "Snell et al. 2017 §3.1"
_PROTONET_PAPER = dict(
    train_ways=Cited(60, _SNELL),
    train_query_shots=Cited(5, _SNELL),
    meta_lr=Cited(1e-3, _SNELL),
    lr_decay_every=Cited(2000, _SNELL),
    lr_decay_rate=Cited(0.5, _SNELL),
    query_shots=Cited(15, "jakesnell/prototypical-networks scripts/train/few_shot/run_train.py "
                      "--data.test_query (the paper does not state it)"),
    eval_episodes=Cited(1000, _SNELL),
)
_SANTORO = "Santoro et al. 2016"
_MANN_PAPER = dict(
    usage_decay=Cited(0.95, "tristandeleu/ntm-one-shot mann/model.py; snowkylin/ntm "
                      "ntm/mann_cell.py (no value for γ was found in the paper)"),
    controller_units=Cited(200, f"{_SANTORO}; tristandeleu/ntm-one-shot examples/omniglot.py"),
    memory_slots=Cited(128, f"{_SANTORO}; tristandeleu/ntm-one-shot examples/omniglot.py"),
    memory_width=Cited(40, f"{_SANTORO}; tristandeleu/ntm-one-shot examples/omniglot.py"),
    read_heads=Cited(4, f"{_SANTORO}; tristandeleu/ntm-one-shot examples/omniglot.py"),
    train_shots=Cited(10, f"{_SANTORO}: episodes of 5 classes x 10 samples"),
    meta_batch_size=Cited(16, "tristandeleu/ntm-one-shot examples/omniglot.py batch size"),
    meta_lr=Cited(1e-3, "tristandeleu/ntm-one-shot examples/omniglot.py Adam"),
    steps=Cited(100000, f"{_SANTORO}: 100,000 episodes, read as meta-updates: "
                "tristandeleu/ntm-one-shot examples/omniglot.py logs each batch of 16 as one "
                "'Episode' (1.6 million episodes; the paper's count may be 6,250 meta-updates)"),
)
# The (ways, shots) each paper reports on Omniglot: 5- and 20-way, 1- and 5-shot. MANN
# reports instance accuracy (5 classes), SNAIL has no paper row here.
PAPER_TASKS = {algo: ((5, 20), (1, 5))
               for algo in ("maml", "fomaml", "reptile", "relationnet", "protonet")}
PAPER = {"maml": _MAML_PAPER, "fomaml": _MAML_PAPER, "reptile": _REPTILE_PAPER,
         "relationnet": {5: _RELATIONNET_PAPER}, "protonet": {5: _PROTONET_PAPER},
         "mann": {5: _MANN_PAPER}}

# What the paper protocols above do not (yet) reproduce of the papers and their code.
NOT_REPRODUCED = {
    "maml": ["the head's initialisation N(0, 1) (cbfinn/maml maml.py w5; here Glorot)",
             "the split: 1,100 training characters with random rotations per task, rotated "
             "test characters (cbfinn/maml data_generator.py); here the vinyals split",
             "the CI uses ddof=1 (cbfinn/maml main.py: numpy's ddof=0); negligible at 600"],
    "fomaml": ["as maml; the Omniglot first-order numbers (98.3 5-way 1-shot) are Nichol et "
               "al. 2018's, Finn et al. report first order on MiniImagenet only"],
    "reptile": ["unrotated test characters (openai/supervised-reptile run_omniglot.py); here "
                "the vinyals test split's rotations are classes",
                "the reference pools accuracy over all test queries and computes no CI"],
    "relationnet": ["the input normalisation ((x - 0.92206) / 0.08426 of dark-on-white "
                    "images; here x / 255 of bright strokes) and one rotation per episode",
                    "the CI: per 1,000-episode repeat, Student t; the reference also kept the "
                    "checkpoint with the best accuracy on the test characters"],
    "protonet": ["early stopping on validation loss (patience 200 epochs of 100 episodes); "
                 "here a fixed 10,000 steps",
                 "the retraining on train+val is a second run, `--trainval --steps=N`, N chosen "
                 "from the first run's validation curve; the reference retrains for the best "
                 "epoch + the patience (jakesnell/prototypical-networks scripts/train/few_shot/"
                 "trainval.py)"],
    "mann": ["20x20 images (the paper and both implementations); here 28x28",
             "the key strength β: 10 is ours, the paper's is 1 (docs/RESULTS.md, MANN: key "
             "strength)"],
    "snail": ["no paper row: its settings are the snail-pytorch reimplementation's, not "
              "checked against the paper (docs/RESULTS.md)"],
}

_MAML_SINUSOID = dict(  # Finn et al. 2017 §5.1: K = 10, meta-batch 25, α = 0.01; 70,000 steps
    shots=5, query_shots=100, train_shots=10, train_query_shots=10, meta_batch_size=25,
    meta_lr=1e-3, lr_decay_rate=1.0, inner_lr=0.01, test_inner_steps=10, steps=70000)
SINUSOID = {"maml": _MAML_SINUSOID, "fomaml": _MAML_SINUSOID}


def _paper_row(algo, train_ways):
    """The paper row for `train_ways` (20-way where the paper has one, else its 5-way)."""
    rows = PAPER.get(algo, {})
    return rows.get(train_ways) or rows.get(5, {})


def _layers(name, algo, dataset, train_ways):
    """[(source for its values or None if each value is Cited, row), ...], lowest first."""
    defaults = {h.name: h.default for h in learner_class(algo).HYPERPARAMETERS}
    if dataset == "sinusoid":
        return [("tf_meta's", COMMON), (f"{algo}'s declared default", defaults),
                ("Finn et al. 2017 §5.1", SINUSOID.get(algo, {}))]
    layers = [("tf_meta's", COMMON), (f"{algo}'s declared default", defaults),
              ("tf_meta's", TF_META.get(algo, {}))]
    if name == "paper":
        layers.append((None, _paper_row(algo, train_ways or COMMON["ways"])))
    return layers


def protocol(name, algo, dataset, train_ways=None, train_shots=None):
    """The run settings and hyperparameters of protocol `name` for `algo` on `dataset`.

    A value that depends on the training task (queries per class, SNAIL's sequence
    length) is a function of (train ways, train shots), evaluated here with
    `train_ways`/`train_shots` (default: the protocol's ways/shots).

    Raises:
      ValueError: unknown protocol or algo.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"--protocol={name}: choose from {', '.join(PROTOCOLS)}")
    result = {}
    for _, row in _layers(name, algo, dataset, train_ways):
        result.update({k: v.value if isinstance(v, Cited) else v for k, v in row.items()})
    task = (train_ways or result["ways"], train_shots or result["shots"])
    return {k: value(*task) if callable(value) else value for k, value in result.items()}


EPISODE_SIZES = ("ways", "shots", "query_shots", "train_ways", "train_shots", "train_query_shots")


def fit_to_splits(algo, dataset, given, classes, examples):
    """tf_meta's episode sizes for `algo`, lowered to what the splits of the data hold.

    A size set in `given` is kept as set (a misfit is refused when the data loads, naming
    its flag). An unset one takes the tf_meta protocol's value, lowered, but not below 1:
    ways to the classes of the smallest split; train_ways (ProtoNet's 60, else the ways) to
    the train split's classes; shots so that a query is left in the smallest class of the
    test splits (val and test), train_shots (Reptile's and MANN's 10, else the shots) in
    the train split's; then the query counts, the protocol's for the fitted training task
    (RelationNet's depend on it), to what the shots leave.

    Args:
      algo, dataset: as `protocol`.
      given: dict, EPISODE_SIZES name -> the value set, or None (unset).
      classes: dict split -> its classes; examples: dict split -> the examples of its
        smallest class. Splits: "train", "test" and optionally "val".

    Returns:
      dict EPISODE_SIZES name -> value.
    """
    sizes = {name: given.get(name) for name in EPISODE_SIZES}

    def fit(name, value, room):
        if sizes[name] is None:
            sizes[name] = max(1, min(value, room))

    test_examples = min(n for split, n in examples.items() if split != "train")
    values = protocol("tf_meta", algo, dataset, sizes["train_ways"] or sizes["ways"],
                      sizes["train_shots"] or sizes["shots"])
    fit("ways", values["ways"], min(classes.values()))
    fit("train_ways", values.get("train_ways") or sizes["ways"], classes["train"])
    fit("shots", values["shots"], test_examples - (sizes["query_shots"] or 1))
    fit("train_shots", values.get("train_shots") or sizes["shots"],
        examples["train"] - (sizes["train_query_shots"] or 1))
    values = protocol("tf_meta", algo, dataset, sizes["train_ways"], sizes["train_shots"])
    fit("query_shots", values["query_shots"], test_examples - sizes["shots"])
    fit("train_query_shots", values["train_query_shots"], examples["train"] - sizes["train_shots"])
    return sizes


def sources(name, algo, dataset, train_ways=None):
    """setting -> where protocol `name`'s value comes from (a paper, code, or tf_meta)."""
    found = {}
    for source, row in _layers(name, algo, dataset, train_ways):
        found.update({k: v.source if isinstance(v, Cited) else source for k, v in row.items()})
    unused = learner_class(algo).UNUSED_SETTINGS
    return {k: f"unused: {unused[k]}" if k in unused else v for k, v in found.items()}


def markdown():
    """Every algorithm's paper protocol on Omniglot, 5- and 20-way, with sources (docs)."""
    lines = ["# The papers' protocols on Omniglot", "",
             "Generated by `python -m tf_meta.protocols > docs/PROTOCOLS.md` from "
             "`tf_meta/protocols.py` (`--protocol=paper`). A value whose source is "
             "\"tf_meta's\" or a declared default is not the paper's.", ""]
    for algo in ALGORITHMS:
        all_ways, all_shots = PAPER_TASKS.get(algo, ((5,), (1,)))
        for ways in all_ways:
            for shots in all_shots:
                values = {**protocol("paper", algo, "omniglot", ways, shots),
                          "ways": ways, "shots": shots}
                cited = {**sources("paper", algo, "omniglot", ways),
                         "ways": "this row: --ways", "shots": "this row: --shots"}
                lines += [f"## {algo}, {ways}-way {shots}-shot", "",
                          "| setting | value | source |", "| --- | --- | --- |"]
                lines += [f"| {k} | {values[k]} | {cited[k]} |" for k in sorted(values)]
                lines.append("")
        if NOT_REPRODUCED.get(algo):
            lines += [f"Not reproduced ({algo}):", ""]
            lines += [f"- {item}" for item in NOT_REPRODUCED[algo]] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
