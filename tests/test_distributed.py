"""tf.distribute: a mirrored meta-update equals the single-device one; two workers agree."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from conftest import ROOT


def test_a_mirrored_meta_update_equals_the_default_strategy_update():
    """MirroredStrategy over two logical CPUs, one meta-batch of 4 tasks split 2 + 2.

    Equal for every algorithm whose tasks do not share BatchNorm batch statistics: MAML
    (per-task statistics, with the Conv-4) and all on a BatchNorm-free MLP backbone.
    RelationNet's clipping sees the whole meta-batch's gradient. Reptile's reference is the
    mean of the two halves' runs (each replica carries its own inner Adam state).
    """
    algos = ["maml:images", "fomaml", "reptile", "protonet", "relationnet", "mann", "snail"]
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "distributed_step.py"), *algos],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["algo"] for r in results] == algos
    for r in results:
        assert r["max_abs_diff"] < 2e-5, r


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_multi_worker_processes_train_and_agree_on_the_weights(tmp_path):
    workers = [f"localhost:{port}" for port in free_ports(2)]
    model_dir, export_dir = tmp_path / "run", tmp_path / "export"
    args = [sys.executable, str(ROOT / "train.py"), "--strategy=multi_worker",
            "--dataset=synthetic", "--algo=maml", "--meta_batch_size=4", "--steps=4",
            "--eval_every=2", "--train_ways=5", "--ways=5", "--query_shots=2",
            "--val_episodes=4", "--eval_episodes=4", f"--model_dir={model_dir}",
            f"--export_dir={export_dir}",
            "--test_inner_steps=1"]  # MAML's unrolled test loop: less graph to trace
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(args, cwd=tmp_path, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "test accuracy 5-way 1-shot" in outputs[0][0]  # the chief reports and exports
    assert "test accuracy" not in outputs[1][0]
    assert sorted(os.listdir(export_dir)) == ["1"]

    readers = [tf.train.load_checkpoint(str(d)) for d in
               (model_dir / "checkpoints", model_dir / "worker_1" / "checkpoints")]
    names = [n for n in readers[0].get_variable_to_shape_map()
             if n.startswith(("model/", "optimizer/"))]
    assert len(names) > 30 and int(readers[1].get_tensor("optimizer/_iterations/.ATTRIBUTES/"
                                                         "VARIABLE_VALUE")) == 4
    for name in names:
        np.testing.assert_array_equal(readers[0].get_tensor(name), readers[1].get_tensor(name),
                                      err_msg=name)
