#!/bin/bash
# Same run, same machine: ../shared/bench/peer_torch.py and tf_meta back to back for each
# configuration; one JSON line per run on stdout (docs/RESULTS.md, throughput table).
#   PEER_PYTHON=/tmp/peerenv/bin/python bash benchmarks/compare_peer.sh > bench.jsonl
cd "$(dirname "$0")/.."
PEER_PYTHON=${PEER_PYTHON:-/tmp/peerenv/bin/python}
PEER=${PEER:-../shared/bench/peer_torch.py}
PYTHON=${PYTHON:-python}
run_tf() { PYTHONPATH=. $PYTHON benchmarks/train_throughput.py "$@" 2>/dev/null; }
run_peer() { "$PEER_PYTHON" "$PEER" "$@" 2>/dev/null; }
run_peer --algo maml
run_tf --algo=maml
run_tf --algo=maml --parallel_tasks=2
TF_ENABLE_ONEDNN_OPTS=0 run_tf --algo=maml
run_peer --algo maml
for algo in fomaml reptile protonet; do
  run_peer --algo $algo
  run_tf --algo=$algo
done
for k in 3 5; do
  run_peer --algo maml --inner-steps $k
  run_tf --algo=maml --inner_steps=$k
done
for algo in relationnet snail mann; do run_tf --algo=$algo; done
