#!/bin/bash
# The configurations of docs/RESULTS.md's throughput table against the PyTorch peer, each in the
# same run: a thin wrapper over `python -m benchmarks.run` (docs/PERFORMANCE.md).
#   PEER_PYTHON=/tmp/peerenv/bin/python bash benchmarks/compare_peer.sh > bench.jsonl
#   BENCH_FLAGS=--target_seconds=1 bash benchmarks/compare_peer.sh   # a quick smoke run
#   ROUNDS="paper bf16" bash benchmarks/compare_peer.sh > bench.jsonl  # only those rounds
# Rounds: peer (the peer's configurations), paper (the MAML and Reptile papers' Omniglot
# configurations against the peer's --net strided), bf16 (each algorithm in float32 then
# bfloat16, against the peer's float32 and --bf16 runs; "precision" records: the ratios).
cd "$(dirname "$0")/.."
PEER_PYTHON=${PEER_PYTHON:-/tmp/peerenv/bin/python}
PYTHON=${PYTHON:-python}
ROUNDS=${ROUNDS:-peer paper bf16}
run() { PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} $PYTHON -m benchmarks.run --nopipeline $BENCH_FLAGS "$@"; }
compare() { run --compare --peer_python="$PEER_PYTHON" "$@"; }
for round in $ROUNDS; do
  case $round in peer|paper|bf16) ;; *)
    echo "unknown round $round in ROUNDS; the rounds: peer paper bf16" >&2; exit 2 ;; esac
done
for round in $ROUNDS; do
  case $round in
    peer)
      compare --algos=maml,fomaml,reptile,protonet
      compare --algos=maml --parallel_tasks=2
      TF_ENABLE_ONEDNN_OPTS=0 run --algos=maml
      compare --algos=maml --inner_steps=3
      compare --algos=maml --inner_steps=5
      run --algos=relationnet,snail,mann ;;
    paper)
      compare --workload=paper ;;
    bf16)
      compare --algos=maml,fomaml,reptile,protonet --precision=float32,bfloat16
      compare --workload=paper --precision=float32,bfloat16
      run --algos=relationnet,snail,mann --precision=float32,bfloat16 ;;
  esac
done
