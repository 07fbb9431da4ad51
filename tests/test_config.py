"""RunConfig: a run's settings resolved from the protocol, validated in-process, replayable.

The table BAD_CONFIGS is the specification of every bad setting that can be caught without
reading data: each raises ValueError with one line naming the setting as its flag, the
line `train.py` prints after "train.py: error: ".
"""

import dataclasses

import pytest

from conftest import ROOT

from tf_meta import ALGORITHMS, protocols
from tf_meta.algorithms import learner_class
from tf_meta.config import RunConfig, flag_definitions

TINY = dict(dataset="synthetic", steps=4, eval_every=2, train_ways=5, ways=3, query_shots=2,
            val_episodes=4, eval_episodes=6)

BAD_CONFIGS = [
    (dict(algo="nope"), "--algo=nope: choose from"),
    (dict(dataset="nope"), "--dataset=nope: choose from"),
    (dict(strategy="nope"), "--strategy=nope: choose from"),
    (dict(steps=0), "--steps=0: it must be >= 1"),
    (dict(steps=-3), "--steps=-3"),
    (dict(meta_lr=0), "--meta_lr must be positive"),
    (dict(meta_lr=-0.1), "--meta_lr must be positive"),
    (dict(meta_lr=float("inf")), "--meta_lr must be positive and finite"),
    (dict(meta_lr=1e300), "--meta_lr must be positive and finite in float32 (<= 3.4e38)"),
    (dict(algo="maml", inner_lr=1e39), "--inner_lr must be positive and finite in float32"),
    (dict(seed=-1), "--seed=-1: it must be >= 0"),
    (dict(seed=2**32), "--seed=4294967296: it must be < 4,294,967,296"),
    (dict(eval_seed=10**30), "--eval_seed=1000000000000000000000000000000: it must be < "),
    (dict(lr_decay_rate=0), "--lr_decay_rate must be positive"),
    (dict(ways=0), "--ways=0"),
    (dict(eval_every=0), "--eval_every=0"),
    (dict(val_episodes=1), "--val_episodes=1: it must be >= 2"),
    (dict(steps=5), "--steps=5 is not a multiple of --eval_every=2"),
    (dict(checkpoint_every=3), "--checkpoint_every=3 does not divide --eval_every=2"),
    (dict(inner_lr=0.1), "--inner_lr does not apply to --algo=protonet"),
    (dict(algo="relationnet", inner_steps=1), "--inner_steps does not apply"),
    (dict(algo="reptile", parallel_tasks=2), "--parallel_tasks does not apply"),
    (dict(algo="reptile", lr_decay_every=500), "--lr_decay_every does not apply to "
     "--algo=reptile: Reptile anneals ε linearly to 0 over --steps"),
    (dict(algo="reptile", lr_decay_rate=0.9), "--lr_decay_rate does not apply to --algo=reptile"),
    (dict(algo="maml", ways=5, train_ways=3), "--ways=5 exceeds the 3-way head"),
    (dict(algo="reptile", ways=5, train_ways=3), "--ways=5 exceeds the 3-way head"),
    (dict(algo="snail", ways=6, train_ways=5), "--ways=6 exceeds the 5-way head"),
    (dict(algo="protonet", dataset="sinusoid"), "--dataset=sinusoid supports --algo in"),
    (dict(algo="maml", inner_lr=0), "--inner_lr must be positive"),
    (dict(algo="maml", inner_lr=-1), "--inner_lr must be positive"),
    (dict(algo="maml", inner_steps=-1), "--inner_steps must be >= 0"),
    (dict(algo="maml", inner_steps=1.5), "--inner_steps must be an integer"),
    (dict(algo="reptile", inner_steps=0), "with 0 inner steps θ never moves"),
    (dict(algo="mann", usage_decay=1.5), "--usage_decay must be in (0, 1]"),
    (dict(algo="mann", key_strength=0), "--key_strength must be positive"),
    (dict(algo="snail", label_scale=-1), "--label_scale must be positive"),
    (dict(algo="snail", sequence_length=1), "--sequence_length must be >= 2"),
    (dict(dataset="folder"), "--dataset=folder needs --data_dir"),
    (dict(algo="maml", dataset="sinusoid", trainval=True),
     "--trainval needs a dataset split by class; --dataset=sinusoid generates its tasks"),
    (dict(export_adapted="test_episode"), "--export_adapted needs an algorithm with an inner "
     "loop (fomaml, maml, reptile), not --algo=protonet"),
    (dict(algo="maml", export_adapted="test_episode", export_dir=""), "it needs --export_dir"),
    (dict(algo="maml", dataset="sinusoid", export_adapted="/some/folder"),
     "needs an image dataset"),
]


@pytest.mark.parametrize("settings,message", BAD_CONFIGS,
                         ids=[" ".join(f"{k}={v}" for k, v in s.items()) for s, _ in BAD_CONFIGS])
def test_bad_settings_raise_one_line_naming_the_flag(settings, message):
    with pytest.raises(ValueError) as raised:
        RunConfig.from_settings(**{**TINY, **settings})
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_unset_settings_take_the_protocol_and_the_declared_defaults():
    config = RunConfig(algo="maml")  # Omniglot: the paper's protocol unless told otherwise
    assert config.protocol == "paper"
    assert (config.ways, config.shots, config.train_ways, config.meta_batch_size) == (5, 1, 5, 32)
    assert (config.network, config.query_shots, config.train_query_shots,
            config.eval_episodes, config.steps) == ("conv4_strided_mean", 1, 1, 600, 60000)
    assert config.hyperparameters == {"inner_lr": 0.4, "inner_steps": 1, "test_inner_steps": 3,
                                      "transductive": True, "adapt_batchnorm": False,
                                      "sum_inner_loss": True, "batch_tasks": True,
                                      "parallel_tasks": 1}
    twenty = RunConfig(algo="maml", protocol="paper", ways=20)
    assert (twenty.meta_batch_size, twenty.hyperparameters["inner_lr"],
            twenty.hyperparameters["test_inner_steps"]) == (16, 0.1, 5)
    ours = RunConfig(algo="maml", protocol="tf_meta")  # the budget runs' settings
    assert (ours.network, ours.query_shots, ours.train_query_shots, ours.eval_episodes,
            ours.steps) == (None, 15, 15, 1000, 1000)
    assert ours.hyperparameters["adapt_batchnorm"] and not ours.hyperparameters["sum_inner_loss"]
    assert config.export_dir == "saved_models/maml"
    assert config.eval_every == 500 and config.checkpoint_every == 100
    for dataset in ("synthetic", "folder"):  # no paper trained on these: tf_meta's settings
        assert RunConfig(algo="maml", dataset=dataset, data_dir="d").protocol == "tf_meta"
    sinusoid = RunConfig(algo="maml", dataset="sinusoid")  # the dataset's protocol wins
    assert sinusoid.hyperparameters["inner_lr"] == 0.01
    assert sinusoid.hyperparameters["test_inner_steps"] == 10 and sinusoid.task == "regression"


def test_explicit_settings_win_over_the_protocol():
    config = RunConfig.from_settings(algo="reptile", steps=40, eval_every=20, inner_lr=0.1,
                                     transductive=False, shots=5, query_shots=3)
    assert config.hyperparameters["inner_lr"] == 0.1
    assert config.hyperparameters["transductive"] is False
    assert config.train_shots == 10  # Reptile's protocol trains on 10 shots
    assert config.shots == 5 and config.query_shots == 3 and config.checkpoint_every == 20


def test_task_dependent_protocol_values_follow_the_training_task():
    assert RunConfig(algo="snail").hyperparameters["sequence_length"] == 6
    assert RunConfig(algo="snail", train_ways=20, train_shots=5).hyperparameters[
        "sequence_length"] == 101
    assert RunConfig(algo="relationnet", ways=20).train_query_shots == 10


def test_a_setting_an_algorithm_ignores_is_accepted_only_at_the_protocol_value():
    # flags.txt of a Reptile run spells the protocol's --lr_decay_every; replaying it works.
    default = RunConfig.from_settings(**{**TINY, "algo": "reptile"})
    again = RunConfig.from_settings(**{**TINY, "algo": "reptile",
                                       "lr_decay_every": default.lr_decay_every,
                                       "lr_decay_rate": default.lr_decay_rate})
    assert again == default


def test_eval_every_is_capped_by_steps():
    config = RunConfig(steps=40)
    assert config.eval_every == 40 and config.checkpoint_every == 20


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_flags_file_round_trip_gives_the_same_config(tmp_path, algo):
    config = RunConfig.from_settings(algo=algo, **TINY, export_adapted=None)
    path = tmp_path / "flags.txt"
    path.write_text(config.to_flags(model_dir="runs/x"))
    assert "--model_dir=runs/x\n" in path.read_text()
    assert RunConfig.from_flags_file(str(path)) == config


def test_flags_file_spells_booleans_as_absl_does(tmp_path):
    text = RunConfig(algo="maml", download=False).to_flags()
    assert "--nodownload\n" in text and "--transductive\n" in text
    path = tmp_path / "flags.txt"
    path.write_text(text.replace("--transductive\n", "--notransductive\n"))
    assert RunConfig.from_flags_file(str(path)).hyperparameters["transductive"] is False


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match=r"unknown settings \['nope'\]"):
        RunConfig.from_settings(nope=1)


def test_a_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().steps = 3


def test_every_declared_hyperparameter_has_one_flag_with_its_help():
    definitions = {d.name: d for d in flag_definitions()}
    for algo in ALGORITHMS:
        for h in learner_class(algo).HYPERPARAMETERS:
            assert definitions[h.name].default is None  # None: the protocol decides
            assert definitions[h.name].type is h.type
            assert h.help in definitions[h.name].help and algo in definitions[h.name].help
    for field in dataclasses.fields(RunConfig):
        assert field.name == "hyperparameters" or field.name in definitions


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_each_default_is_written_once(algo):
    """A tf_meta protocol row that repeats an algorithm's declared default is a second copy
    of it. (A paper row may restate one: it is the paper's value, with its source.)"""
    declared = {h.name: h.default for h in learner_class(algo).HYPERPARAMETERS}
    for table in (protocols.TF_META, protocols.SINUSOID):
        row = table.get(algo, {})
        repeated = {k: v for k, v in row.items() if k in declared and declared[k] == v}
        assert not repeated, (algo, repeated)


def test_a_network_is_chosen_by_name_for_image_datasets():
    config = RunConfig.from_settings(algo="maml", network="conv4_strided_mean",
                                     adapt_batchnorm=False)
    assert config.network == "conv4_strided_mean" and "--network=conv4_strided_mean\n" in (
        config.to_flags())
    assert RunConfig().network is None  # ProtoNet's paper network is the algorithm's own
    with pytest.raises(ValueError, match="--network=resnet: choose from conv4, conv4_strided"):
        RunConfig(network="resnet")
    with pytest.raises(ValueError, match="--network does not apply to --dataset=sinusoid"):
        RunConfig(algo="maml", dataset="sinusoid", network="conv4")


def test_every_paper_value_names_its_source_and_the_docs_show_the_table():
    for algo, rows in protocols.PAPER.items():
        for row in rows.values():
            for name, value in row.items():
                assert isinstance(value, protocols.Cited) and value.source, (algo, name)
    assert protocols.sources("paper", "maml", "omniglot", 20)["inner_lr"].startswith(
        "Finn et al. 2017 App. A.1")
    assert protocols.sources("paper", "maml", "omniglot")["shots"] == "tf_meta's"
    assert protocols.sources("paper", "reptile", "omniglot")["lr_decay_every"].startswith(
        "unused: Reptile anneals ε linearly")
    assert (ROOT / "docs" / "PROTOCOLS.md").read_text().strip() == protocols.markdown().strip(), (
        "docs/PROTOCOLS.md is stale: python -m tf_meta.protocols > docs/PROTOCOLS.md")
