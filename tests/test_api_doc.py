"""docs/API.md runs: its python blocks, in order, in one fresh interpreter, as a reader would
paste them; a block that raises fails the test with its number and the traceback. And the
library is quiet while they run: no TensorFlow start-up lines, no Keras warnings."""

import re
import subprocess
import sys

from conftest import ROOT
from test_train import FOREIGN

API = ROOT / "docs" / "API.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
RUNNER = """
import sys, traceback
blocks = {blocks!r}
namespace = {{"__name__": "__main__"}}
for number, block in enumerate(blocks, 1):
    print(f"--- block {{number}}", flush=True)
    try:
        exec(compile(block, f"docs/API.md block {{number}}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"docs/API.md block {{number}} failed")
"""


def test_the_api_guide_has_an_example_of_each_part_the_issue_names():
    text = API.read_text()
    for call in ("data.from_arrays", 'build_learner("protonet"', 'build_learner("maml"',
                 'build_learner("snail"', "evaluate_episodes", "training.fit",
                 "keras.models.load_model", "export.export_learner",
                 'signatures["serving_default"]', "experiment.train_and_evaluate"):
        assert call in text, call


def test_every_python_block_of_the_api_guide_runs_in_order(tmp_path):
    blocks = BLOCK.findall(API.read_text())
    assert len(blocks) >= 8
    done = subprocess.run([sys.executable, "-c", RUNNER.format(blocks=blocks)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert done.stdout.count("--- block") == len(blocks)
    # Quiet as a library too: no TF start-up lines (cuInit included), no shuffle warning.
    assert not [line for line in done.stderr.splitlines() if FOREIGN.match(line)], done.stderr
    assert "shuffle=True" not in done.stderr, done.stderr
