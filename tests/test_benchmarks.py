"""The benchmark tools: the outside-the-process memory sampler, the profiler's op table, the
workloads (the peer's and the papers') and the harness's precision and peer comparison."""

import json
import pathlib
import subprocess
import sys

import pytest

from benchmarks import memory, workloads

ROOT = pathlib.Path(__file__).resolve().parents[1]


def sampled_peaks(code):
    process = subprocess.Popen([sys.executable, "-c", code])
    sampler = memory.PeakSampler(process.pid)
    process.wait()
    return sampler.stop()


def test_anonymous_peak_sees_an_allocation_the_process_frees_again():
    # 300 MB touched, held for 0.3 s, freed, then the process idles a little longer.
    peaks = sampled_peaks("import time; b = bytearray(300 << 20); time.sleep(0.3); "
                          "del b; time.sleep(0.2)")
    idle = sampled_peaks("import time; time.sleep(0.5)")
    assert 300 <= peaks["peak_anon_mb"] - idle["peak_anon_mb"] < 320, (peaks, idle)
    assert peaks["peak_rss_sampled_mb"] >= peaks["peak_anon_mb"]
    assert idle["peak_file_mb"] > 0


def test_a_finished_process_reads_as_empty():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert memory.resident_kib(process.pid) == {}


def test_every_algorithm_has_a_workload_its_run_config_states():
    """The harness covers the registry (an algorithm without a peer trains its protocol's
    episodes), and a workload reaches the learner only as settings."""
    from tf_meta.algorithms import ALGORITHMS, learner_class
    assert sorted(workloads.algos()) == sorted(ALGORITHMS)
    assert workloads.workload("relationnet") == workloads.Workload(5, 1, 19, 0, 1, 1e-3)
    for algo in workloads.algos():
        workload = workloads.workload(algo)
        config = workloads.run_config(algo, workload, parallel_tasks=2)
        assert (config.algo, config.train_ways, config.train_shots, config.train_query_shots,
                config.meta_batch_size, config.meta_lr) == (
            algo, workload.ways, workload.shots, workload.query_shots,
            workload.meta_batch_size, workload.meta_lr)
        declared = learner_class(algo).hyperparameter_names()
        assert set(config.hyperparameters) == set(declared)
        for name, value in (("inner_steps", workload.inner_steps), ("parallel_tasks", 2)):
            assert config.hyperparameters.get(name, value) == value, (algo, name)


def test_profile_reads_the_trace_it_records(tmp_path):
    """benchmarks/profile.py: a real TF profiler trace of Reptile steps, read back as op times."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.profile", "--algo=reptile", "--warmup=1", "--steps=2",
         "--top=50", f"--logdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    ops = {r["op"]: r for r in records if r["kind"] == "op"}
    summary = records[-1]
    assert summary["kind"] == "profile" and summary["logdir"] == str(tmp_path)
    assert 0 < summary["wall_ms_per_step"] and 0 < summary["op_ms_per_step"]
    # Each share is rounded to 4 decimals, so the listed ones may overshoot 1 by that much.
    assert sum(r["share"] for r in ops.values()) <= 1 + 0.5e-4 * len(ops)
    # Conv-4 inner steps: 5 Adam steps x 5 tasks, each a forward and a backward pass.
    convolutions = [r for name, r in ops.items() if "Conv2D" in name]
    assert convolutions and sum(r["share"] for r in convolutions) > 0.3, sorted(ops)
    assert any("FusedBatchNorm" in name for name in ops), sorted(ops)


def test_the_paper_workloads_are_the_paper_protocols_networks_and_training_episodes():
    """MAML and FOMAML train --protocol=paper's episodes, inner loop and meta-batch on its
    network; Reptile trains the peer's workload on its paper's network. No FLOP count."""
    from tf_meta.config import RunConfig
    for algo in ("maml", "fomaml"):
        paper = RunConfig.from_settings(algo=algo, protocol="paper")
        assert workloads.workload(algo, name="paper") == workloads.Workload(
            paper.train_ways, paper.train_shots, paper.train_query_shots,
            paper.hyperparameters["inner_steps"], paper.meta_batch_size, paper.meta_lr,
            paper.network)
        config = workloads.run_config(algo, workloads.PAPER_WORKLOADS[algo])
        assert config.hyperparameters["inner_lr"] == paper.hyperparameters["inner_lr"]
        assert config.network == "conv4_strided_mean"
    reptile = RunConfig.from_settings(algo="reptile", protocol="paper")
    assert workloads.workload("reptile", name="paper") == workloads.PEER_WORKLOADS[
        "reptile"]._replace(network=reptile.network)
    assert workloads.gflop_per_s("maml", workloads.PAPER_WORKLOADS["maml"], 10.0) == (None, None)
    with pytest.raises(ValueError, match="--workload=paper has no protonet; its algorithms: "
                                         "maml, fomaml, reptile"):
        workloads.workload("protonet", name="paper")


def peer_flags(command):
    """{flag: value, or True for a flag without one} of a peer command line."""
    args, flags = command[2:], {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            value = args[i + 1] if i + 1 < len(args) else None
            flags[arg] = True if value is None or value.startswith("--") else value
    return flags


def test_the_peer_runs_the_same_network_episodes_and_precision():
    maml = workloads.workload("maml", name="paper")
    assert peer_flags(workloads.peer_command("py", "peer.py", "maml", maml, 2.0, 1,
                                             "bfloat16")) == {
        "--algo": "maml", "--ways": "5", "--shots": "1", "--queries": "1", "--inner-steps": "1",
        "--meta-batch": "32", "--net": "strided", "--bf16": True, "--target-seconds": "2.0",
        "--warmup": "1"}
    default = peer_flags(workloads.peer_command("py", "peer.py", "maml",
                                                workloads.workload("maml"), 2.0, 1))
    assert (default["--net"], default["--queries"], "--bf16" in default) == ("maxpool", "15",
                                                                             False)
    reptile = peer_flags(workloads.peer_command("py", "peer.py", "reptile",
                                                workloads.workload("reptile", name="paper"),
                                                2.0, 1))
    assert reptile["--net"] == "strided" and "--queries" not in reptile  # it samples none
    assert workloads.peer_command("py", "peer.py", "maml", maml, 2.0, 1, "float16") is None
    assert any("BatchNorm without a scale" in d
               for d in workloads.peer_differences("maml", maml, "bfloat16"))


def test_the_peer_takes_every_flag_and_value_the_harness_passes_and_its_defaults_are_ours():
    """Read from ../shared/bench/peer_torch.py's own argparse calls and DEFAULTS table."""
    import ast
    script = ROOT.parent / "shared" / "bench" / "peer_torch.py"
    if not script.exists():
        pytest.skip(f"no peer at {script}")
    tree = ast.parse(script.read_text())
    defaults, = [ast.literal_eval(node.value) for node in ast.walk(tree) if
                 isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DEFAULTS"]
    choices = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            given = {k.arg: k.value for k in node.keywords}.get("choices")
            choices[node.args[0].value] = (  # its one computed list: --algo's sorted(DEFAULTS)
                None if given is None else sorted(defaults) if isinstance(given, ast.Call)
                else ast.literal_eval(given))
    for name, workload_set in workloads.WORKLOADS.items():
        for algo, workload in workload_set.items():
            for precision in workloads.PEER_PRECISION_FLAGS:
                command = workloads.peer_command("py", "peer.py", algo, workload, 2.0, 1,
                                                 precision)
                for flag, value in peer_flags(command).items():
                    assert flag in choices, (name, algo, flag)
                    assert choices[flag] is None or value in choices[flag], (algo, flag, value)
    for algo, workload in workloads.PEER_WORKLOADS.items():
        queries = 0 if algo == "reptile" else workload.query_shots  # see peer_command
        assert defaults[algo] == (workload.ways, workload.shots, queries, workload.inner_steps,
                                  workload.meta_batch_size), algo


def test_a_precision_reaches_the_learner_and_only_float32_has_an_sgemm_fraction():
    from tf_meta.precision import PRECISIONS
    assert workloads.PRECISIONS == PRECISIONS
    config = workloads.workload("protonet")._replace(ways=5)
    learner = workloads.build("protonet", config, precision="bfloat16")
    assert learner.precision == "bfloat16"
    assert learner.backbone.layers[1].dtype_policy.name == "mixed_bfloat16"
    peer = workloads.PEER_WORKLOADS["maml"]
    assert workloads.gflop_per_s("maml", peer, 32.0)[1] is not None
    gflops, fraction = workloads.gflop_per_s("maml", peer, 32.0, "bfloat16")
    assert gflops == workloads.gflop_per_s("maml", peer, 32.0)[0] and fraction is None


def test_the_harness_records_precision_and_compares_bfloat16_with_the_peers_bf16(tmp_path):
    """benchmarks.run with a stand-in peer that echoes its command line: bfloat16 trains
    between the peer's --bf16 runs of the same network; float16 has no peer run to compare
    with (ratio null), nor a training run here (--notrain: only a comparison trains)."""
    peer = tmp_path / "peer.py"
    peer.write_text("import json, sys\nprint(json.dumps({'tasks_per_s': 2.0, "
                    "'peak_rss_mb': 1.0, 'argv': sys.argv[1:]}))\n")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--algos=reptile", "--workload=paper",
         "--precision=bfloat16,float16", "--meta_batch_size=1", "--notrain", "--nopipeline",
         "--compare", f"--peer_python={sys.executable}", f"--peer_script={peer}",
         "--target_seconds=0", "--warmup=1"], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    train, = [r for r in records if r["kind"] == "train"]
    assert (train["precision"], train["config"]["network"]) == ("bfloat16", "conv4_strided")
    peers = [r for r in records if r["kind"] == "peer"]
    assert [r["precision"] for r in peers] == ["bfloat16", "bfloat16"]
    assert all("--bf16" in r["argv"] and "strided" in r["argv"] for r in peers)
    compares = {r["precision"]: r for r in records if r["kind"] == "compare"}
    assert compares["bfloat16"]["ratio"] == round(train["episodes_per_s"] / 2, 3)
    assert compares["float16"]["ratio"] is None
    assert "no float16 counterpart" in compares["float16"]["note"]


def test_the_precision_ratio_alternates_precisions_and_takes_the_median_round_ratio(monkeypatch):
    """benchmarks.precision_ratio: every round times each precision in turn, and the ratio
    is the median of the per-round ratios (a slow spell falls on both precisions)."""
    from benchmarks import precision_ratio
    timed = []
    # Round rates: float32 2, 4, 8 (a machine slowing down); bfloat16 each time x 3, 1.5, 1.25.
    rates = iter([2.0, 6.0, 4.0, 6.0, 8.0, 10.0])

    def steps_per_second(step, batches, seconds, at_least):
        timed.append(id(step))
        return next(rates)

    monkeypatch.setattr(workloads, "steps_per_second", steps_per_second)
    config = workloads.workload("protonet")._replace(ways=5, shots=1, query_shots=1)
    record = precision_ratio.compare("protonet", config, ["float32", "bfloat16"], rounds=3,
                                     round_seconds=0.0, warmup=1)
    first, second = timed[:2]
    assert first != second and timed == [first, second] * 3
    assert record["episodes_per_s"] == {"float32": 4.0, "bfloat16": 6.0}
    assert record["per_round"] == {"float32": [2.0, 4.0, 8.0], "bfloat16": [6.0, 6.0, 10.0]}
    assert record["ratio_to_float32"]["bfloat16"] == {"median": 1.5, "min": 1.25, "max": 3.0,
                                                        "fastest": 1.25}


def test_the_precision_ratio_refuses_an_unknown_precision_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.precision_ratio", "--algo=protonet",
         "--precisions=float32,fp8"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and result.stdout == ""
    assert "--precisions takes two or more of float32, bfloat16, float16; got float32,fp8" \
        in result.stderr


def test_task_batching_refuses_a_setting_the_algorithm_lacks_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.task_batching", "--stage=test", "--algos=maml",
         "--test_inner_batch_size=10"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and result.stdout == "" and "Traceback" not in result.stderr
    assert "--test_inner_batch_size does not apply to --algo=maml" in result.stderr
