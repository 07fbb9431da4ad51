"""The benchmark tools: the outside-the-process memory sampler and the profiler's op table."""

import json
import pathlib
import subprocess
import sys

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
