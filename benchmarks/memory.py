"""Peak memory of a measurement process, sampled from outside it, the same way for any runtime.

`ru_maxrss` (what both benchmarks report themselves) counts every resident page, including
the file-backed pages of the runtime's shared libraries: `import tensorflow` alone maps
363 MB of them (187 MB anonymous), `import torch` 75 MB (143 MB anonymous). Those pages
are shared with the page cache and other processes and do not grow with the model. The
anonymous resident memory (RssAnon: heap, tensors, thread stacks) is what a process
allocates for itself, so the harness reports its peak too, sampled from /proc/<pid>/status.
"""

import threading
import time


def resident_kib(pid):
    """{"VmRSS": KiB, "RssAnon": KiB, "RssFile": KiB} of a live process (empty if gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0])
    return fields


class PeakSampler:
    """Samples a process's resident memory every `interval` seconds until stopped.

    `peaks_mb()`: {"peak_anon_mb", "peak_file_mb", "peak_rss_sampled_mb"}, each the maximum
    over the samples, MB. A sampled peak can only under-state the true one (a spike shorter
    than the interval can be missed); the meta-training peaks recur every meta-iteration
    (0.05-2 s), far longer than the default 5 ms interval.
    """

    def __init__(self, pid, interval=0.005):
        self._pid, self._interval = pid, interval
        self._peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for key, value in resident_kib(self._pid).items():
                self._peaks[key] = max(self._peaks[key], value)
            time.sleep(self._interval)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peaks_mb()

    def peaks_mb(self):
        return {"peak_anon_mb": round(self._peaks["RssAnon"] / 1024, 1),
                "peak_file_mb": round(self._peaks["RssFile"] / 1024, 1),
                "peak_rss_sampled_mb": round(self._peaks["VmRSS"] / 1024, 1)}
