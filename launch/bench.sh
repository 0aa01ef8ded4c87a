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
echo "bench: 16 ranks, tp 4 x pp 4, default config ($steps steps), the same model and batch on 1 rank, and 16 ranks with --ep 4"
# Wall time of the executed model: both timed at the executed sizes (the default config's timed
# model does not fit one rank).
mpirun -np 16 --bind-to none "$bin" --tp 4 --pp 4 --steps "$steps" --precision fp32 --time-as none \
    --summary-json "$tmp/np16.json" > /dev/null
"$bin" --steps "$steps" --precision fp32 --time-as none --summary-json "$tmp/np1.json" > /dev/null
# The same with the experts split over the TP ranks: the layout decides the expert GEMMs' rows.
mpirun -np 16 --bind-to none "$bin" --tp 4 --pp 4 --ep 4 --steps "$steps" --precision fp32 --time-as none \
    --summary-json "$tmp/np16ep4.json" > /dev/null
if [ -z "$quick" ]; then
    # Instruction counts do not depend on what else the machine runs (wall times here varied
    # by 15% between identical runs). Six tiny-config steps under callgrind take about a
    # minute with start-up; one default-config step takes several. valgrind 3.19 cannot read
    # the Swift binary's DWARF, so it runs a copy stripped of it.
    echo "bench: instructions per training step (tiny config, one rank, callgrind)"
    step="$(nm "$bin" | awk '{print $3}' | grep -E '^\$s5Train7TrainerC18trainStepInContext.*KF$' | head -1 || true)"
    [ -n "$step" ] || { echo "bench: cannot find the training step's symbol in $bin" >&2; exit 1; }
    cp "$bin" "$tmp/moe-train-nodwarf"
    strip -g "$tmp/moe-train-nodwarf"
    OPENBLAS_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$tmp/callgrind.out" \
        --toggle-collect="$step" --dump-after="$step" \
        "$tmp/moe-train-nodwarf" bench --instructions --config configs/tiny.json > /dev/null 2> "$tmp/callgrind.log" \
        || { cat "$tmp/callgrind.log" >&2; exit 1; }
    # One dump per step, alternating: .1 and .2 are step 1 with and without the clock, ...;
    # the third pair (.5, .6) is the steady state.
    callgrind_annotate --threshold=100 "$tmp/callgrind.out.5" > "$tmp/callgrind-step.txt"
    callgrind_annotate --threshold=100 "$tmp/callgrind.out.6" > "$tmp/callgrind-step-noclock.txt"
fi
python3 "$here/bench_report.py" "$tmp" "$out" "$(nproc)"
