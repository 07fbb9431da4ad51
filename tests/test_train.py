"""train.py, the command line: a tiny run leaves its artefacts and replays from its flag file;
each kind of bad input reaches the terminal as one line and leaves nothing. (What a run does
is tested in-process in test_experiment.py.)"""

import concurrent.futures
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

TINY = ["--dataset=synthetic", "--steps=4", "--eval_every=2", "--train_ways=5", "--ways=3",
        "--query_shots=2", "--val_episodes=4", "--eval_episodes=6"]


# TensorFlow's native start-up log ("I0000 00:00:... port.cc:153] oneDNN ...") and absl's hint
# after a flag error are not train.py's own output.
FOREIGN = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|Pass --helpshort)")


def own_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip() and not FOREIGN.match(line)]


def run_train(args, tmp_path, env=None):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300, env=env or dict(os.environ))


def test_tiny_run_writes_flags_checkpoint_results_and_a_servable_export(tmp_path):
    model_dir, export_dir = tmp_path / "run", tmp_path / "saved_models" / "protonet"
    done = run_train(TINY + [f"--model_dir={model_dir}", f"--export_dir={export_dir}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test accuracy 3-way 1-shot:" in done.stdout and "95% CI, 6 episodes" in done.stdout
    assert (model_dir / "checkpoints" / "checkpoint").is_file()  # tf.train.CheckpointManager
    assert os.listdir(model_dir / "logs")  # TensorBoard event files
    flags_txt = (model_dir / "flags.txt").read_text()
    assert "--dataset=synthetic" in flags_txt and "--steps=4" in flags_txt
    result = json.loads((model_dir / "test_3way_1shot.json").read_text())
    assert result["episodes"] == 6 and 0 <= result["accuracy"] <= 1 and result["ci95"] >= 0
    assert (export_dir / "1" / "saved_model.pb").is_file()
    # Quiet: none of TensorFlow's native start-up lines (I0000 ... port.cc, cuInit, ...),
    # nor Keras's warning that it ignores shuffle=True for a dataset.
    assert not [line for line in done.stderr.splitlines() if FOREIGN.match(line)], done.stderr
    assert "shuffle=True" not in done.stderr, done.stderr

    # --flagfile replays the run's flags; --eval_only restores its checkpoint.
    again = run_train([f"--flagfile={model_dir / 'flags.txt'}", "--eval_only", "--ways=4"],
                      tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((model_dir / "test_4way_1shot.json").read_text())["episodes"] == 6
    assert sorted(os.listdir(export_dir)) == ["1", "2"]


def test_help_exits_0_with_the_usage_and_no_start_up_noise(tmp_path, bad_flag_runs):
    """absl exits 1 after --help; train.py 0, as a help should. (--helpfull takes the same
    path after the same start-up: it runs in the shared process of IN_PROCESS.)"""
    for flag, done in [("--help", run_train(["--help"], tmp_path)),
                       ("--helpfull", bad_flag_runs[("--helpfull",)][0])]:
        assert done.returncode == 0, (flag, done.stderr[-2000:])
        assert done.stdout.startswith("Meta-trains a tf_meta learner") and "--algo" in done.stdout
        assert not [line for line in done.stderr.splitlines() if FOREIGN.match(line)]


# The command line itself: absl's parser, flag files, and the library's errors as one line.
# Every bad setting has its in-process row in test_config.py / test_experiment.py; these
# rows check that each kind reaches the terminal as one `train.py: error:` line. One row of
# each kind of path is its own train.py process (absl's parse error, a flag file, an
# unexpected argument, the library's ValueError, several replicas: a fresh interpreter is the
# honest check of exit code and stderr); the other rows (IN_PROCESS) run one after another in
# one shared process, through train.py's own main, as the interpreter would report them.
BAD_FLAGS = [
    (["--algo=nope"], "value should be one of"),
    (["--nope=1"], "Unknown command line flag 'nope'"),
    (["--steps=abc"], "flag --steps=abc: invalid literal for int()"),
    (["--flagfile={tmp}/missing.txt"], "missing.txt"),
    (["unexpected"], "unexpected arguments"),
    (["--steps=5"], "--steps=5 is not a multiple of --eval_every=2"),
    (["--algo=maml", "--inner_lr=0"], "--inner_lr must be positive"),
    (["--inner_lr=0.1"], "--inner_lr does not apply to --algo=protonet"),
    (["--ways=21"], "ways=21 exceeds the 20 classes of the val split"),
    (["--model_dir={tmp}/a_file/run"], "is not a folder"),
    (["--model_dir="], "--model_dir is empty: name a folder"),  # it meant runs/<algo>
    (["--eval_only"], "needs a trained run in --model_dir="),
    (["--strategy=mirrored", "--cpu_replicas=2", "--meta_batch_size=3"],
     "--meta_batch_size=3 does not split evenly over the 2 replicas"),
]
# MAML with an inner learning rate that makes its loss NaN at the first step.
DIVERGES = ["--algo=maml", "--inner_lr=1e30", "--meta_batch_size=2", "--test_inner_steps=1"]
IN_PROCESS = [["--nope=1"], ["--steps=abc"], ["--steps=5"], ["--algo=maml", "--inner_lr=0"],
              ["--inner_lr=0.1"], ["--model_dir={tmp}/a_file/run"], ["--model_dir="],
              ["--eval_only"], ["--helpfull"], DIVERGES]

# Runs train.py's main once per row [folder, argv] in this one process, each row in its
# folder with fresh flags; prints [exit status, stdout, stderr] a row, as JSON.
SHARED_PROCESS = """
import contextlib, importlib.util, io, json, os, sys, traceback
spec = importlib.util.spec_from_file_location("train", sys.argv[1])
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)  # not __main__: defines, runs nothing
results = []
for folder, argv in json.loads(sys.argv[2]):
    os.chdir(folder)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            train.run_command.main(["train.py", *argv], prog="train.py", doc=train.__doc__)
            code = 0
        except SystemExit as e:
            code = e.code
        except BaseException:
            traceback.print_exc()
            code = 1
    if isinstance(code, str):  # as the interpreter reports sys.exit(message)
        err.write(code + "\\n")
        code = 1
    train.run_command.FLAGS.unparse_flags()
    results.append([code or 0, out.getvalue(), err.getvalue()])
print("RESULTS " + json.dumps(results))
"""


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_one_line_error_and_nothing_written(done, message, tmp_path, before):
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = own_lines(done.stderr)
    assert len(lines) == 1 and message in lines[0], done.stderr[-2000:]
    assert lines[0].startswith("train.py: error: ")
    assert tree(tmp_path) == before  # no model dir, no export version, no flags.txt


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """flags -> (train.py's CompletedProcess, its folder, the folder's files before the run),
    for BAD_FLAGS, --helpfull and a run that DIVERGES.

    The rows not IN_PROCESS run two at a time, as most of their time is importing TF; the
    IN_PROCESS rows share one more process.
    """
    def folder_of(flags):
        folder = tmp_path_factory.mktemp("bad_flags")
        (folder / "a_file").write_text("a file where a folder should be")
        argv = (TINY + [f"--model_dir={folder / 'run'}", f"--export_dir={folder / 'export'}"]
                + [f.format(tmp=folder) for f in flags])
        return folder, argv, tree(folder)

    def run(flags):
        folder, argv, before = folder_of(flags)
        return {tuple(flags): (run_train(argv, folder), folder, before)}

    def run_shared(rows):
        runs = {tuple(flags): folder_of(flags) for flags in rows}
        done = subprocess.run([sys.executable, "-c", SHARED_PROCESS, str(ROOT / "train.py"),
                               json.dumps([[str(f), a] for f, a, _ in runs.values()])],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        last = done.stdout.splitlines()[-1] if done.stdout.strip() else ""
        assert done.returncode == 0 and last.startswith("RESULTS "), done.stderr[-3000:]
        return {flags: (subprocess.CompletedProcess(argv, *result), folder, before)
                for (flags, (folder, argv, before)), result
                in zip(runs.items(), json.loads(last[len("RESULTS "):]))}

    alone = [flags for flags, _ in BAD_FLAGS if flags not in IN_PROCESS]
    tmp_path_factory.getbasetemp()  # made once here: two threads making it at once can clash
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        shared = pool.submit(run_shared, IN_PROCESS)
        runs = {k: v for one in pool.map(run, alone) for k, v in one.items()}
        return runs | shared.result()


@pytest.mark.parametrize("flags,message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flags_fail_with_one_line_and_leave_nothing(bad_flag_runs, flags, message):
    done, folder, before = bad_flag_runs[tuple(flags)]
    assert_one_line_error_and_nothing_written(done, message, folder, before)


def test_a_run_that_diverges_says_so_in_one_line_and_exports_nothing(bad_flag_runs):
    done, folder, _ = bad_flag_runs[tuple(DIVERGES)]
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "train.py: error: the training loss became NaN or Inf at step" in done.stderr
    assert not (folder / "export").exists()
