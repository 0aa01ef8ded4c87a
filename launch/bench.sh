#!/usr/bin/env bash
# make bench: every measurement of the benchmark issue, side by side with its reference,
# into one table and bench.json. Benchmarks measure; nothing here is a test.
#   launch/bench.sh OUT.json [--quick]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
out="${1:-bench.json}"
quick="${2:-}"
bin="$here/../.build/release/moe-train"
cref="$here/../.build/bench/bench_mpi"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$here/.."
steps=10; [ -n "$quick" ] && steps=2
echo "bench: GEMM path, step breakdown, emulator overhead, scaling (one process)"
"$bin" bench $quick --json "$tmp/local.json" > /dev/null
# Three rounds, alternating the Communicator and bare MPI; the report keeps each one's best
# time per operation and size (one round read 1.2x-6x at random on a busy 2-core machine).
reps=3; [ -n "$quick" ] && reps=1
for np in 2 4 16; do
    echo "bench: collectives on $np ranks (Communicator, then bare MPI; best of $reps rounds)"
    for rep in $(seq "$reps"); do
        mpirun -np "$np" --bind-to none "$bin" bench-comm $quick --json "$tmp/comm-swift-$np-$rep.json" > /dev/null
        mpirun -np "$np" --bind-to none "$cref" $quick > "$tmp/comm-c-$np-$rep.json"
    done
done
echo "bench: 16 ranks, tp 4 x pp 4, default config ($steps steps), and the same model and batch on 1 rank"
# Wall time of the executed model: both timed at the executed sizes (the default config's timed
# model does not fit one rank).
mpirun -np 16 --bind-to none "$bin" --tp 4 --pp 4 --steps "$steps" --precision fp32 --time-as none \
    --summary-json "$tmp/np16.json" > /dev/null
"$bin" --steps "$steps" --precision fp32 --time-as none --summary-json "$tmp/np1.json" > /dev/null
python3 "$here/bench_report.py" "$tmp" "$out" "$(nproc)"
