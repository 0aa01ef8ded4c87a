#!/usr/bin/env bash
# Installs what moe-train needs from Debian's packages, only when it is missing, so that
# repeated `make` runs stay fast. Also installs Python's safetensors (used by the tests to
# check that dumps load in the reference reader) when --with-python is given, and valgrind
# (`make bench` counts instructions with callgrind) when --with-valgrind is given.
set -euo pipefail
packages=(libopenmpi-dev openmpi-bin libopenblas-dev)
with_python=""
for a in "$@"; do
    case "$a" in
        --with-python) with_python=1 ;;
        --with-valgrind) packages+=(valgrind) ;;
        *) echo "install-deps: unknown option $a (--with-python, --with-valgrind)" >&2; exit 2 ;;
    esac
done
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
if [ -n "$with_python" ]; then
    if ! python3 -c "import safetensors, numpy" 2>/dev/null; then
        echo "install-deps: installing Python packages safetensors numpy"
        python3 -m pip install -q safetensors numpy 2>&1 | grep -v -i "warning" || true
    fi
fi
