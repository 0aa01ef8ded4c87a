#!/usr/bin/env bash
# Runs moe-train under mpirun with the settings a small machine needs.
#   launch/run.sh -np 16 -- --tp 4 --pp 4      (flags after -- go to moe-train)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
np=1
mpi_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -np|-n) np="$2"; shift 2 ;;
        --) shift; break ;;
        *) mpi_args+=("$1"); shift ;;
    esac
done
bin="${MOE_TRAIN_BIN:-$here/../.build/release/moe-train}"
[ -x "$bin" ] || bin="$(command -v moe-train)"
# --bind-to none: with more ranks than cores, let the kernel move ranks between cores.
exec mpirun -np "$np" --bind-to none "${mpi_args[@]}" "$bin" "$@"
