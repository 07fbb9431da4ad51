"""The `tf-meta` command as a user gets it: a wheel built with `python -m build`, installed in
a fresh venv, whose `tf-meta train|evaluate|export` run without the checkout; quiet output.

The fresh venv takes TensorFlow and the other dependencies from the test's own environment
through a .pth line (installing TensorFlow again would take minutes), never tf_meta: pip
resolves the wheel's declared requirements against them with --no-index, and the command
runs from a folder outside the checkout, so only the wheel's files can answer.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from conftest import ROOT
from test_train import FOREIGN, TINY

pytest.importorskip("build", reason="the wheel test needs `build` (pip install -e .[test])")


def run(args, cwd, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the fresh venv's tf-meta, the wheel's path, a work folder outside the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building writes build/ and *.egg-info beside setup.py
    for name in ("setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name if source.exists() else _mkdir(source) / name)
    shutil.copytree(ROOT / "tf_meta", source / "tf_meta",
                    ignore=shutil.ignore_patterns("__pycache__"))
    built = run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                 "--outdir", str(root / "dist"), str(source)], root)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel, = (root / "dist").glob("tf_meta-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                     "install", "--quiet", "--no-index", str(wheel)], root)
    assert installed.returncode == 0, installed.stderr[-2000:]
    work = root / "work"
    work.mkdir()
    return venv / "bin" / "tf-meta", wheel, work


def _mkdir(path):
    path.mkdir()
    return path


def test_the_wheel_holds_the_package_its_data_the_license_and_the_command(installed):
    _, wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "tf_meta/data/omniglot_vinyals_split.json" in names
    assert any(n.endswith(".dist-info/LICENSE") for n in names)
    entry_points, = [n for n in names if n.endswith("entry_points.txt")]
    assert "tf-meta = tf_meta.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_tf_meta_help_lists_the_commands_and_train_help_exits_0(installed, capsys):
    """`tf-meta train --help` as the installed command (its start-up must be quiet); the
    top-level help and an unknown command are argparse's answers in tf_meta.cli.main, the
    function the installed command calls (each process a TensorFlow start-up of ~5 s)."""
    from tf_meta import cli
    with pytest.raises(SystemExit) as top:
        cli.main(["--help"])
    assert top.value.code == 0
    shown = capsys.readouterr().out
    assert all(c in shown for c in ("train", "evaluate", "export", "predict")), shown
    with pytest.raises(SystemExit) as unknown:
        cli.main(["fit"])
    assert unknown.value.code == 2 and "invalid choice: 'fit'" in capsys.readouterr().err
    tf_meta, _, work = installed
    done = run([str(tf_meta), "train", "--help"], work)  # evaluate and export: the same code
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("tf-meta train: ") and "--algo" in done.stdout
    assert not [line for line in done.stderr.splitlines() if FOREIGN.match(line)]
    bad = run([str(tf_meta), "train", "--steps=abc"], work)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "tf-meta train: error: flag --steps=abc: invalid literal for int() with base 10: "
        "'abc'"], bad.stderr


def test_installed_tf_meta_trains_evaluates_and_exports_a_tiny_run_quietly(installed):
    tf_meta, _, work = installed
    model_dir = work / "run"
    trained = run([str(tf_meta), "train", *TINY, f"--model_dir={model_dir}",
                   "--export_dir="], work)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "test accuracy 3-way 1-shot:" in trained.stdout
    # One line a checkpoint interval, counted in meta-steps; no bar, no escape codes.
    steps = [line.split()[1] for line in trained.stdout.splitlines() if line.startswith("step ")]
    assert steps == ["2/4", "4/4"], trained.stdout
    assert "\x1b[" not in trained.stdout and "\r" not in trained.stdout
    assert "Epoch" not in trained.stdout
    assert not [line for line in trained.stderr.splitlines() if FOREIGN.match(line)]
    assert not trained.stderr.strip(), trained.stderr

    # evaluate and export read the run's flags.txt: only what changes is said.
    evaluated = run([str(tf_meta), "evaluate", f"--model_dir={model_dir}", "--ways=4"], work)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "test accuracy 4-way 1-shot:" in evaluated.stdout
    assert json.loads((model_dir / "test_4way_1shot.json").read_text())["episodes"] == 6
    assert "exported" not in evaluated.stdout  # evaluating exports only when asked
    exported = run([str(tf_meta), "export", f"--model_dir={model_dir}",
                    f"--export_dir={work / 'served'}"], work)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (work / "served" / "1" / "saved_model.pb").is_file()
    assert not (work / "saved_models").exists() and not (work / "runs").exists()


def test_evaluate_reads_a_remote_run_s_flags_through_tf_io_gfile():
    """absl opens a --flagfile with `open`, which knows no gs:// or ram://: a remote flag
    file (the run's own, or one given) becomes its flags; the command line's come after."""
    import tensorflow as tf

    from tf_meta import run_command

    run = "ram://cli_test/run"
    tf.io.gfile.makedirs(run)
    with tf.io.gfile.GFile(run + "/flags.txt", "w") as f:
        f.write("# tf_meta 0.1.0\n--algo=maml\n\n--steps=4\n")
    argv = ["tf-meta evaluate", f"--model_dir={run}", "--ways=4"]
    assert run_command.run_flags(argv, "evaluate") == [
        "tf-meta evaluate", "--algo=maml", "--steps=4", f"--model_dir={run}", "--ways=4"]
    assert run_command.run_flags(["train.py", f"--flagfile={run}/flags.txt"], "train") == [
        "train.py", "--algo=maml", "--steps=4"]
    assert run_command.run_flags(argv, "train") == argv  # train reads no run's flags
    with pytest.raises(Exception, match="cannot read --flagfile=ram://cli_test/missing"):
        run_command.run_flags(["train.py", "--flagfile=ram://cli_test/missing"], "train")
