"""The harness's outside-the-process memory sampler (benchmarks/memory.py)."""

import subprocess
import sys

from benchmarks import memory


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
