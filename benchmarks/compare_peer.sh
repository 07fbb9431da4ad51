#!/bin/bash
# The configurations of docs/RESULTS.md's throughput table against the PyTorch peer, each in the
# same run: a thin wrapper over `python -m benchmarks.run` (docs/PERFORMANCE.md).
#   PEER_PYTHON=/tmp/peerenv/bin/python bash benchmarks/compare_peer.sh > bench.jsonl
#   BENCH_FLAGS=--target_seconds=1 bash benchmarks/compare_peer.sh   # a quick smoke run
cd "$(dirname "$0")/.."
PEER_PYTHON=${PEER_PYTHON:-/tmp/peerenv/bin/python}
PYTHON=${PYTHON:-python}
run() { PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} $PYTHON -m benchmarks.run --nopipeline $BENCH_FLAGS "$@"; }
compare() { run --compare --peer_python="$PEER_PYTHON" "$@"; }
compare --algos=maml,fomaml,reptile,protonet
compare --algos=maml --parallel_tasks=2
TF_ENABLE_ONEDNN_OPTS=0 run --algos=maml
compare --algos=maml --inner_steps=3
compare --algos=maml --inner_steps=5
run --algos=relationnet,snail,mann
