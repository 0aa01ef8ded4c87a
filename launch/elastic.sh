#!/usr/bin/env bash
# Fault-tolerant launcher, in the spirit of torchrun --max-restarts:
#   launch/elastic.sh -np 4 [--max-restarts 3] [--hang-timeout 60] -- --config configs/tiny.json --checkpoint-every 5 --fail-at-step 12
# Runs `moe-train supervise`, which restarts the job from its last good checkpoint.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
bin="${MOE_TRAIN_BIN:-$here/../.build/release/moe-train}"
[ -x "$bin" ] || bin="$(command -v moe-train)"
np=1
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -np|-n|--np) np="$2"; shift 2 ;;
        --) shift; break ;;
        *) args+=("$1"); shift ;;
    esac
done
exec "$bin" supervise --np "$np" "${args[@]}" -- "$@"
