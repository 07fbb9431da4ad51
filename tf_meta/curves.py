"""Learning curves of run folders: validation accuracy against meta-iterations.

    curve = curves.validation_curve("runs/maml_paper")      # [(1000, 0.910), (2000, 0.951), ...]
    print(curves.markdown({"MAML": curve}))
    curves.plot({"MAML": curve}, "docs/curves/maml.png", paper=(98.7, 0.4))

Read from the run's TensorBoard logs (`logs/validation`, Keras's
`evaluation_accuracy_vs_iterations`, written at every validation run). A resumed run has one
events file per process; a step logged twice (validated again after a kill) keeps its
newest value. The plot needs matplotlib, which tf_meta does not depend on (`pip install
tf-meta[plots]`); the table does not.

    python -m tf_meta.curves --runs=runs/maml_paper --labels=MAML --paper=98.7,0.4 \\
        --png=docs/curves/maml_paper.png
"""

import io
import os

import tensorflow as tf

TAG = "evaluation_accuracy_vs_iterations"


def validation_curve(workdir, tag=TAG):
    """[(meta-iteration, validation accuracy in [0, 1]), ...] of run folder `workdir`, by step.

    Raises:
      ValueError: the folder has no validation logs with `tag`.
    """
    pattern = os.path.join(workdir, "logs", "validation", "events.out.tfevents.*")
    values = {}  # step -> (wall time, value): the newest write of a step wins
    for path in tf.io.gfile.glob(pattern):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == tag:
                    number = float(tf.make_ndarray(value.tensor))
                    if event.wall_time >= values.get(event.step, (-1.0, None))[0]:
                        values[event.step] = (event.wall_time, number)
    if not values:
        raise ValueError(f"{workdir}: no validation curve ({tag}) under logs/validation")
    return [(step, values[step][1]) for step in sorted(values)]


def markdown(curves):
    """A markdown table: one row per meta-iteration, one column (accuracy in %) per curve.

    Args:
      curves: label -> [(meta-iteration, accuracy in [0, 1]), ...].
    """
    steps = sorted({step for curve in curves.values() for step, _ in curve})
    lookup = {label: dict(curve) for label, curve in curves.items()}
    lines = ["| meta-iterations | " + " | ".join(curves) + " |",
             "| ---: | " + " | ".join("---:" for _ in curves) + " |"]
    for step in steps:
        cells = [f"{100 * lookup[label][step]:.1f}" if step in lookup[label] else ""
                 for label in curves]
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(curves, path, paper=None, title="Validation accuracy", xlabel="meta-iterations",
         marks=()):
    """Writes a PNG of `curves` (label -> [(x, accuracy)]) to `path` (any TF filesystem).

    Args:
      paper: (accuracy %, half-width of its 95% interval %) drawn as a line with its band,
        or None.
      xlabel: what x is: meta-iterations (the step), or e.g. minutes of training.
      marks: accuracies in % drawn as dotted horizontal lines (time to accuracy's marks).

    Raises:
      ImportError: matplotlib is not installed, with the command that installs it.
    """
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install tf-meta[plots]") from e
    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, curve in curves.items():
        steps, accuracies = zip(*curve)
        axes.plot(steps, [100 * a for a in accuracies], marker=".", label=label)
    if paper is not None:
        accuracy, interval = paper
        axes.axhline(accuracy, color="black", linestyle="--", linewidth=1,
                     label=f"the paper's test accuracy, {accuracy} ± {interval}")
        axes.axhspan(accuracy - interval, accuracy + interval, color="grey", alpha=0.2)
    for mark in marks:
        axes.axhline(mark, color="grey", linestyle=":", linewidth=1)
        axes.annotate(f"{mark:g}%", (0, mark), xycoords=("axes fraction", "data"),
                      xytext=(2, 2), textcoords="offset points", fontsize=8, color="grey")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot.close(figure)
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def _main(argv):
    from absl import app, flags
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    options = flags.FLAGS
    labels = options.labels or [os.path.basename(os.path.normpath(r)) for r in options.runs]
    if len(labels) != len(options.runs):
        raise app.UsageError(f"--labels has {len(labels)} names for {len(options.runs)} --runs")
    found = {label: validation_curve(run) for label, run in zip(labels, options.runs)}
    print(markdown(found))
    if options.png:
        paper = tuple(float(v) for v in options.paper) if options.paper else None
        plot(found, options.png, paper=paper, title=options.title)


if __name__ == "__main__":
    from absl import app, flags
    flags.DEFINE_multi_string("runs", None, "a run folder (--model_dir of train.py); repeat "
                              "for more curves", required=True)
    flags.DEFINE_multi_string("labels", None, "the legend label of each --runs, in order "
                              "(default: the folder names)")
    flags.DEFINE_list("paper", None, "the paper's accuracy and its 95% interval's half-width, "
                      "in %, e.g. 98.7,0.4")
    flags.DEFINE_string("png", None, "also write the plot here")
    flags.DEFINE_string("title", "Validation accuracy", "the plot's title")
    app.run(_main)
