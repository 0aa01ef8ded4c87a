#!/usr/bin/env bash
# Installs what moe-train needs from Debian's packages, only when it is missing, so that
# repeated `make` runs stay fast. Also installs Python's safetensors (used by the tests to
# check that dumps load in the reference reader) when --with-python is given.
set -euo pipefail
packages=(libopenmpi-dev openmpi-bin libopenblas-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--with-python" ]; then
    if ! python3 -c "import safetensors, numpy" 2>/dev/null; then
        echo "install-deps: installing Python packages safetensors numpy"
        python3 -m pip install -q safetensors numpy 2>&1 | grep -v -i "warning" || true
    fi
fi
