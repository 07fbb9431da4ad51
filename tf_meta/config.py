"""RunConfig: every setting of a run, resolved from a published protocol and validated.

    config = RunConfig(algo="maml", steps=2000)          # the rest: the MAML protocol
    config = RunConfig.from_settings(algo="maml", inner_lr=0.1)   # flat, as the flags
    experiment.train_and_evaluate(config, "runs/maml")

A setting left None takes the algorithm's protocol value (`protocols.protocol`), so the
object is complete once built; a bad value raises ValueError with one line naming the
setting in its flag spelling (`--steps=0: ...`), which `train.py` prints as is. The run
folder keeps the config as `flags.txt`, in absl's flag-file format (`to_flags`,
`from_flags_file`), so `train.py --flagfile=<run>/flags.txt` replays a run.

A run on an image folder first reads what the folder decides (`with_data_settings`): its
image size and channels, its split fractions and, under the tf_meta protocol, episode
sizes its splits can supply. Those values are then explicit, in flags.txt too.
"""

import dataclasses
import math
import os
from typing import NamedTuple, Optional

from tf_meta import datasets, distribute, protocols, training
from tf_meta.algorithms import ALGORITHMS, DEFAULT_ALGORITHM, learner_class
from tf_meta.algorithms.hyperparameters import FLOAT32_MAX, resolve
from tf_meta.backbones import NETWORKS
from tf_meta.data.folders import has_split_folders
from tf_meta.data.sources import SPLIT_SCHEMES
from tf_meta.datasets import DATASETS
from tf_meta.precision import PRECISIONS
from tf_meta.version import VERSION

PROTOCOL = "(unset: the --protocol's value, tf_meta/protocols.py)"


# train.py's own flags, which flags.txt may hold but a RunConfig does not.
RUN_FLAGS = ("model_dir", "eval_only", "overwrite")
SEED_LIMIT = 2**32  # seeds are numpy's and the stateless samplers': in [0, 2**32)


def _setting(default, type_, help_text, choices=None, minimum=None, from_protocol=False,
             shapes_weights=False, maximum=None):
    """A RunConfig field; its metadata is what `train.py` makes its flag from.

    `shapes_weights`: the value changes what training computes, so a run folder's resume
    or evaluation must have the value its training had (`weight_settings`); the others
    (test episodes, schedules of validation and checkpoints, places) may differ.
    `maximum`: an exclusive upper bound.
    """
    return dataclasses.field(default=default, metadata=dict(
        type=type_, help=help_text + (f" {PROTOCOL}" if from_protocol else ""),
        choices=choices, minimum=minimum, maximum=maximum, from_protocol=from_protocol,
        shapes_weights=shapes_weights))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The settings of one run. Fields left None are resolved when the object is built.

    `hyperparameters` maps the algorithm's declared hyperparameter names
    (`MetaLearner.HYPERPARAMETERS`) to values; after resolution it holds every one of them.
    """

    algo: str = _setting(DEFAULT_ALGORITHM, str, "meta-learning algorithm", sorted(ALGORITHMS),
                         shapes_weights=True)
    dataset: str = _setting("omniglot", str, "episode source: TFDS omniglot, an image folder "
                            "(--data_dir; unset episode sizes fit its classes and images), "
                            "synthetic clusters, or sinusoid regression (MAML paper §5.1)",
                            list(DATASETS), shapes_weights=True)
    split: str = _setting("vinyals", str, "Omniglot class split", list(SPLIT_SCHEMES),
                          shapes_weights=True)
    data_dir: Optional[str] = _setting(None, str, "TFDS data dir for omniglot (default: "
                                       "TFDS_DATA_DIR or ~/tensorflow_datasets); the image "
                                       "root for --dataset=folder")
    download: bool = _setting(True, bool, "let TFDS download omniglot when it is not prepared")
    image_size: Optional[int] = _setting(None, int, "--dataset=folder: the side of the square "
                                         "its images are resized to, at least 28 (the "
                                         "smallest every network here takes; unset: their "
                                         "own side when they all share one square size, "
                                         "within 28 to 84, mini-ImageNet's; else it must be "
                                         "set)", minimum=28, shapes_weights=True)
    channels: Optional[int] = _setting(None, int, "--dataset=folder: 1 (grayscale) or 3 (RGB) "
                                       "(unset: 1 when every image is grayscale, else 3)",
                                       shapes_weights=True)
    invert: bool = _setting(False, bool, "--dataset=folder: train on 255 - pixel, for drawings "
                            "dark on light (tf_meta reads Omniglot so: bright strokes on black); "
                            "its exports then take images dark on light and refuse dark "
                            "backgrounds", shapes_weights=True)
    split_fractions: Optional[str] = _setting(
        None, str, "--dataset=folder of class folders: the fractions of its classes for "
        "training, validation and test, e.g. 0.8,0,0.2 for no validation (unset: "
        "0.7,0.15,0.15; each split gets 2 classes or more). A folder of train/, val/ and "
        "test/ folders is split by them", shapes_weights=True)
    protocol: Optional[str] = _setting(None, str, "the protocol unset settings come from: the "
                                       "paper's (training and test, each value cited: "
                                       "docs/PROTOCOLS.md) or tf_meta's (the settings of the "
                                       "budget runs in docs/RESULTS.md); unset: the dataset's "
                                       "(paper for omniglot, tf_meta for folder and synthetic)",
                                       [None, *protocols.PROTOCOLS])
    network: Optional[str] = _setting(None, str, "image network: conv4 (max-pool; Vinyals et "
                                      "al., Snell et al.), conv4_strided (Reptile's), "
                                      "conv4_strided_mean (MAML's); unset: the protocol's, "
                                      "else the algorithm's own", [None, *NETWORKS],
                                      from_protocol=True, shapes_weights=True)
    ways: Optional[int] = _setting(None, int, "test classes per episode (N in N-way)",
                                   minimum=1, from_protocol=True)
    shots: Optional[int] = _setting(None, int, "support examples per class in test episodes "
                                    "(K in K-shot)", minimum=1, from_protocol=True)
    query_shots: Optional[int] = _setting(None, int, "query examples per class in test "
                                          "episodes", minimum=1, from_protocol=True)
    train_ways: Optional[int] = _setting(None, int, "classes per training episode (default: "
                                         "--ways; ProtoNet: 60)", minimum=1, from_protocol=True,
                                         shapes_weights=True)
    train_shots: Optional[int] = _setting(None, int, "support examples per class in training "
                                          "episodes (default: --shots)", minimum=1,
                                          from_protocol=True, shapes_weights=True)
    train_query_shots: Optional[int] = _setting(None, int, "query examples per class in "
                                                "training episodes", minimum=1,
                                                from_protocol=True, shapes_weights=True)
    trainval: bool = _setting(False, bool, "train on the training and the validation "
                              "classes, without validation: Snell et al. 2017 §3.1's final "
                              "models, retrained on train+val for the --steps a first run "
                              "selected on validation", shapes_weights=True)
    meta_batch_size: Optional[int] = _setting(None, int, "episodes per meta-update", minimum=1,
                                              from_protocol=True, shapes_weights=True)
    steps: Optional[int] = _setting(None, int, "meta-updates to train", minimum=1,
                                    from_protocol=True)
    meta_lr: Optional[float] = _setting(None, float, "outer learning rate (Reptile: ε, "
                                        "annealed to 0)", from_protocol=True, shapes_weights=True)
    lr_decay_every: Optional[int] = _setting(None, int, "multiply the meta learning rate by "
                                             "--lr_decay_rate this often", minimum=1,
                                             from_protocol=True, shapes_weights=True)
    lr_decay_rate: Optional[float] = _setting(None, float, "learning-rate multiplier every "
                                              "--lr_decay_every", from_protocol=True,
                                              shapes_weights=True)
    eval_every: int = _setting(500, int, "steps between validation runs", minimum=1)
    checkpoint_every: Optional[int] = _setting(
        None, int, "steps between checkpoints; a killed run restarted with the same command "
        "resumes from the last one (default: the largest divisor of --eval_every up to 100)",
        minimum=1)
    val_episodes: int = _setting(200, int, "validation episodes per validation run", minimum=2)
    eval_episodes: Optional[int] = _setting(None, int, "fixed test episodes for the final score "
                                            "± CI", minimum=2, from_protocol=True)
    seed: int = _setting(0, int, "seed of initialisation and training episodes", minimum=0,
                         maximum=SEED_LIMIT, shapes_weights=True)
    eval_seed: int = _setting(1000, int, "seed of the fixed validation and test episode sets",
                              minimum=0, maximum=SEED_LIMIT)
    export_dir: Optional[str] = _setting(None, str, "TF Serving model base path, a new integer "
                                         "version is written there (default: "
                                         "saved_models/<algo>; '' skips the export)")
    export_adapted: Optional[str] = _setting(None, str, "also export the learner adapted to "
                                             "one support set (a folder of class folders, or "
                                             "'test_episode') as a plain classifier to "
                                             "<export_dir>_adapted")
    serve_transductive: bool = _setting(False, bool, "the exports answer a request's queries "
                                        "as the test does (MAML, Reptile, RelationNet: one "
                                        "BatchNorm batch, the papers' tests, so one query moves "
                                        "the others' answers); by default each query is "
                                        "answered on its own")
    precision: str = _setting("float32", str, "the networks' arithmetic: float32, or mixed "
                              "precision (float32 weights) in bfloat16 (CPUs with "
                              "AVX512-BF16 or AMX, TPUs, recent GPUs) or float16 (GPUs; the "
                              "loss is scaled); docs/PERFORMANCE.md, Precision",
                              list(PRECISIONS), shapes_weights=True)
    strategy: str = _setting("default", str, "tf.distribute strategy: the meta-batch's tasks "
                             "split across replicas, meta-gradients all-reduced (multi_worker: "
                             "workers from TF_CONFIG; README, Distributed)",
                             list(distribute.STRATEGIES))
    cpu_replicas: int = _setting(1, int, "--strategy=mirrored without GPUs: replicas on logical "
                                 "CPU devices (exercises the distributed path; not faster)",
                                 minimum=1)
    hyperparameters: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        # The settings as given, before resolution: `with_data_settings` resolves them anew.
        object.__setattr__(self, "_given", {
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "hyperparameters"}, **self.hyperparameters})
        self._check_names()
        self._set("protocol", self.protocol or DATASETS[self.dataset].protocol)
        algorithm = learner_class(self.algo)
        protocol = protocols.protocol(self.protocol, self.algo, self.dataset,
                                      self.train_ways or self.ways,
                                      self.train_shots or self.shots)
        for name, why in algorithm.UNUSED_SETTINGS.items():
            if getattr(self, name) not in (None, protocol.get(name)):
                raise ValueError(f"--{name} does not apply to --algo={self.algo}: {why}")
        for field in dataclasses.fields(self):
            if field.metadata.get("from_protocol") and getattr(self, field.name) is None:
                self._set(field.name, protocol.get(field.name))
        # resolve() refuses a name the algorithm does not declare: "--x does not apply to ..."
        given = {**self.hyperparameters,
                 **{name: protocol[name] for name in algorithm.hyperparameter_names()
                    if self.hyperparameters.get(name) is None}}
        self._set("hyperparameters", resolve(algorithm.HYPERPARAMETERS, given,
                                             f"--algo={self.algo}"))
        self._set("train_ways", self.train_ways or self.ways)
        self._set("train_shots", self.train_shots or self.shots)
        if self.export_dir is None:
            self._set("export_dir", os.path.join("saved_models", self.algo))
        self._check_values(algorithm)
        self._set("eval_every", min(self.eval_every, self.steps))
        self._set("checkpoint_every", self.checkpoint_every or math.gcd(self.eval_every, 100))
        training.check_schedule(self.steps, self.eval_every, self.checkpoint_every)
        self._check_exports(algorithm)

    @classmethod
    def from_settings(cls, **settings):
        """A RunConfig from flat settings, as the flags give them: fields and hyperparameters.

        None values are left to the protocol. A name that is neither a field nor a
        hyperparameter of any algorithm is an error.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"hyperparameters"}
        fields = {k: v for k, v in settings.items() if k in names and v is not None}
        hyper = {k: v for k, v in settings.items() if k not in names and v is not None}
        unknown = set(hyper) - set(hyperparameter_types())
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        return cls(**fields, hyperparameters=hyper)

    @classmethod
    def from_flags_file(cls, path):
        """The RunConfig a run folder's flags.txt holds.

        Comment lines and the flags of `train.py` itself (`RUN_FLAGS`: --model_dir,
        --eval_only, --overwrite) are skipped. A file without a --protocol line was written
        before protocols existed, when tf_meta's settings were the only ones: it is read
        with `protocol="tf_meta"`. A folder run's file without --image_size was written
        before the folder settings, when folders were read at 28x28 grayscale and class
        folders split 0.7,0.15,0.15: it is read so.
        """
        import tensorflow as tf  # tf.io.gfile: the run folder may be on any TF filesystem
        with tf.io.gfile.GFile(path) as f:
            lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        types = {**{f.name: f.metadata["type"] for f in dataclasses.fields(cls)
                    if "type" in f.metadata}, **hyperparameter_types()}
        settings = {}
        for line in lines:
            name, _, value = line[2:].partition("=")
            if name in RUN_FLAGS or name[2:] in RUN_FLAGS and name.startswith("no"):
                continue
            if not value and name.startswith("no") and types.get(name[2:]) is bool:
                settings[name[2:]] = False
            elif types.get(name) is bool:
                settings[name] = value.lower() not in ("false", "0")
            elif name in types:
                settings[name] = types[name](value)
            else:
                raise ValueError(f"{path}: unknown flag --{name}")
        settings.setdefault("protocol", "tf_meta")
        if settings.get("dataset") == "folder" and "image_size" not in settings:
            # Written before the folder settings: folders were read and split so.
            settings.update(image_size=28, channels=1)
            if not has_split_folders(settings.get("data_dir") or ""):
                settings.setdefault("split_fractions", "0.7,0.15,0.15")
        return cls.from_settings(**settings)

    def with_data_settings(self):
        """This config with the settings its data decides, read from the data.

        For a dataset with `Dataset.inspect` (an image folder: listed, and its images
        decoded once when the image size or channels are unset): unset data settings take
        the data's values (`datasets.DataFacts`); under the tf_meta protocol, unset episode
        sizes are fitted to the splits (`protocols.fit_to_splits`: ways no more than the
        classes of each split, queries no more than its images leave), so a first run on
        a small folder trains. Set values are kept: a misfit is refused when the data
        loads, naming the flag. Every value is then explicit, so flags.txt replays the same
        run and export. Other datasets: self.

        Raises:
          ValueError: one line: the data cannot be read, or does not decide a setting
            (images of several sizes and no --image_size).
        """
        inspect = DATASETS[self.dataset].inspect
        if inspect is None:
            return self
        facts = inspect(datasets.location(self))
        given = {name: value for name, value in self._given.items() if value is not None}
        settings = {**facts.settings, **given}
        if self.protocol == "tf_meta":
            settings.update(protocols.fit_to_splits(self.algo, self.dataset, given,
                                                    facts.classes, facts.examples))
        return RunConfig.from_settings(**settings)

    def to_flags(self, model_dir=None):
        """The config as absl flag-file text, one `--name=value` line per set value, after a
        comment naming the tf_meta version that wrote it."""
        values = {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                     if f.name != "hyperparameters"}, **self.hyperparameters}
        if model_dir is not None:
            values["model_dir"] = model_dir
        lines = [f"# written by tf_meta {VERSION}"]
        for name, value in values.items():
            if value is None:
                continue
            if isinstance(value, bool):
                lines.append(f"--{name}" if value else f"--no{name}")
            else:
                lines.append(f"--{name}={value}")
        return "".join(line + "\n" for line in lines)

    def weight_settings(self):
        """name -> value of every setting that shapes the trained weights.

        The fields marked `shapes_weights` and the algorithm's hyperparameters declared so
        (`Hyperparameter.shapes_weights`); not --steps, which a resume may raise.
        """
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.metadata.get("shapes_weights")}
        declared = {h.name: h for h in learner_class(self.algo).HYPERPARAMETERS}
        return {**fields, **{name: value for name, value in self.hyperparameters.items()
                             if declared[name].shapes_weights}}

    @property
    def task(self):
        """The task kind of the dataset: "classification" or "regression"."""
        return DATASETS[self.dataset].task

    def summary(self):
        """The settings a result is reported with: dict for its JSON."""
        names = ("algo", "protocol", "dataset", "split", "trainval", "network", "ways",
                 "shots", "query_shots", "eval_episodes", "eval_seed", "steps")
        return {**{n: getattr(self, n) for n in names}, **self.hyperparameters}

    def _set(self, name, value):
        object.__setattr__(self, name, value)  # frozen: only resolution writes

    def _check_names(self):
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            if choices and getattr(self, field.name) not in choices:
                raise ValueError(f"--{field.name}={getattr(self, field.name)}: choose from "
                                 f"{', '.join(c for c in choices if c is not None)}")
        task = DATASETS[self.dataset].task
        if task not in learner_class(self.algo).TASKS:
            able = sorted(a for a in ALGORITHMS if task in learner_class(a).TASKS)
            raise ValueError(f"--dataset={self.dataset} supports --algo in {able}")

    def _check_values(self, algorithm):
        for field in dataclasses.fields(self):
            value, minimum = getattr(self, field.name), field.metadata.get("minimum")
            if minimum is not None and value is not None and value < minimum:
                raise ValueError(f"--{field.name}={value}: it must be >= {minimum}")
            maximum = field.metadata.get("maximum")
            if maximum is not None and value is not None and value >= maximum:
                raise ValueError(f"--{field.name}={value}: it must be < {maximum:,}")
            if field.metadata.get("type") is float and not 0 < value <= FLOAT32_MAX:
                raise ValueError(f"--{field.name} must be positive and finite in float32 "
                                 f"(<= 3.4e38), got {value}")
        if self.trainval and DATASETS[self.dataset].load is None:
            raise ValueError(f"--trainval needs a dataset split by class; --dataset="
                             f"{self.dataset} generates its tasks")
        if self.dataset == "folder" and not self.data_dir:
            raise ValueError("--dataset=folder needs --data_dir")
        for name in datasets.DATA_SETTINGS:
            if getattr(self, name) not in (None, False) and name not in DATASETS[
                    self.dataset].settings:
                able = [d for d in DATASETS if name in DATASETS[d].settings]
                raise ValueError(f"--{name} applies to --dataset={', '.join(able)}, not to "
                                 f"--dataset={self.dataset}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"--channels={self.channels}: 1 (grayscale) or 3 (RGB)")
        datasets.split_fractions(self.split_fractions)  # raises naming the flag
        if self.network and DATASETS[self.dataset].backbone:
            raise ValueError(f"--network does not apply to --dataset={self.dataset}, which "
                             "has its paper's network")
        if algorithm.HAS_HEAD and self.task == "classification" and self.ways > self.train_ways:
            raise ValueError(f"--ways={self.ways} exceeds the {self.train_ways}-way head "
                             "trained with --train_ways")

    def _check_exports(self, algorithm):
        if not self.export_adapted:
            return
        if not self.export_dir:
            raise ValueError("--export_adapted writes to <export_dir>_adapted: it needs "
                             "--export_dir")
        if not algorithm.ADAPTS:
            able = sorted(a for a in ALGORITHMS if learner_class(a).ADAPTS)
            raise ValueError(f"--export_adapted needs an algorithm with an inner loop "
                             f"({', '.join(able)}), not --algo={self.algo}")
        if self.task == "regression" and self.export_adapted != "test_episode":
            raise ValueError(f"--export_adapted=<image folder> needs an image dataset; for "
                             f"--dataset={self.dataset} use --export_adapted=test_episode")


def hyperparameter_types():
    """name -> type of every hyperparameter any algorithm declares."""
    return {h.name: h.type for algo in ALGORITHMS for h in learner_class(algo).HYPERPARAMETERS}


class FlagDefinition(NamedTuple):
    """One command-line flag of a run: `train.py` defines one absl flag per definition."""

    name: str
    type: type
    default: object
    help: str
    choices: Optional[list] = None


def flag_definitions():
    """The flags of every RunConfig field, then of every algorithm's hyperparameters.

    A hyperparameter's flag defaults to None (the protocol's value); its help names the
    algorithms that take it, with each one's own help and default where they differ.
    """
    definitions = [FlagDefinition(f.name, f.metadata["type"], f.default, f.metadata["help"],
                                  f.metadata["choices"] and [
                                      c for c in f.metadata["choices"] if c is not None])
                   for f in dataclasses.fields(RunConfig) if "type" in f.metadata]
    declared = {}  # name -> {(help, default): [algos]}
    for algo in ALGORITHMS:
        for h in learner_class(algo).HYPERPARAMETERS:
            declared.setdefault(h.name, (h.type, {}))[1].setdefault(
                (h.help, h.default), []).append(algo)
    for name, (type_, variants) in declared.items():
        help_text = "; ".join(
            f"{', '.join(algos)}: {text}" + ("" if default is None else f" (default {default})")
            for (text, default), algos in variants.items())
        definitions.append(FlagDefinition(name, type_, None, help_text))
    return definitions
