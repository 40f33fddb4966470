#!/usr/bin/env bash
# Install edge-tc as a systemd service on a Jetson with JetPack 6 (L4T R36: Orin, Ubuntu 22.04,
# Python 3.10, TensorRT 10.3), JetPack 5 (L4T R35: Orin/Xavier, Ubuntu 20.04: needs a
# Python >= 3.10 given with --python, see docs/operations.md) or JetPack 4.6 (L4T R32: TX2,
# Nano, Xavier; Ubuntu 18.04, Python 3.6, TensorRT 8.0/8.2).
#
#   sudo tools/install_jetson.sh [--no-start] [--python PATH] [--bundle DIR]
#   tools/install_jetson.sh --dry-run [--l4t-release 36|35|32]   # print the steps, change nothing
#
# L4T R32: JetPack 4's TensorRT and pycuda bindings exist for Python 3.6 only and edge-tc needs
# Python >= 3.10, so the daemon runs on a standalone CPython 3.11 (python-build-standalone,
# unpacked in /opt/edge-tc/python) and the TensorRT engine in a worker process under the
# system's Python 3.6 (a venv /opt/edge-tc/worker-venv with JetPack's tensorrt and pycuda
# 2021.1): deploy/jetson-tx2.toml, engine.isolation = "process". Set PBS_SHA256 to pin the
# CPython download. docs/operations.md, "Jetson TX2 / JetPack 4.6".
#
# Steps: apt packages (TensorRT's Python bindings, CUDA for pycuda, SoapySDR and the UHD
# module), a venv at /opt/edge-tc/venv that sees the system's tensorrt, edge-tc with ONNX
# Runtime (CPU fallback) and pycuda, the bundle, /etc/edge-tc/edge-tc.toml from
# deploy/jetson-orin.toml, the unit with this board's GPU device nodes, then start it.
set -euo pipefail
# shellcheck source=tools/install_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/install_common.sh"

L4T_RELEASE=""
BUNDLE="$SRC_DIR/models/default"

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --no-start) START=0 ;;
        --python) PYTHON=${2:?--python needs a path}; shift ;;
        --bundle) BUNDLE=${2:?--bundle needs a directory}; shift ;;
        --l4t-release) L4T_RELEASE=${2:?--l4t-release needs a number}; shift ;;
        -h | --help) usage ;;
        *) printf 'install: unknown option %s\n' "$1" >&2; usage 2 ;;
    esac
    shift
done
need_root

# L4T release: "# R36 (release), REVISION: 3.0, ..." in /etc/nv_tegra_release
if [[ -z $L4T_RELEASE ]]; then
    [[ -r /etc/nv_tegra_release ]] ||
        die "no /etc/nv_tegra_release: not a Jetson (or give --l4t-release N)"
    L4T_RELEASE=$(sed -n '1s/^# R\([0-9]*\).*/\1/p' /etc/nv_tegra_release)
fi
case $L4T_RELEASE in
    36) say "L4T R36 (JetPack 6)" ;;
    35) say "L4T R35 (JetPack 5): Ubuntu 20.04's Python is 3.8; pass --python with a 3.10+" ;;
    32) say "L4T R32 (JetPack 4.6): daemon on a standalone CPython 3.11, TensorRT in a Python 3.6 worker" ;;
    *) die "L4T R$L4T_RELEASE: unknown JetPack release (this script knows R32, R35 and R36)" ;;
esac

# -- JetPack 4.6 (L4T R32) ----------------------------------------------------------------------
# Why python-build-standalone and not deadsnakes: the deadsnakes PPA publishes for supported
# Ubuntu releases only (18.04 left standard support in 2023), building CPython on a TX2 takes the
# better part of an hour, and python-build-standalone's aarch64-unknown-linux-gnu builds need
# glibc >= 2.17 (18.04 has 2.27), are relocatable and touch nothing of the system's Python 3.6,
# which JetPack's tensorrt and the worker keep using.
PBS_TAG=20240814
PBS_TARBALL="cpython-3.11.9+${PBS_TAG}-aarch64-unknown-linux-gnu-install_only.tar.gz"
PBS_URL="https://github.com/astral-sh/python-build-standalone/releases/download/$PBS_TAG/${PBS_TARBALL//+/%2B}"
PYCUDA_VERSION="2021.1"   # the last pycuda for Python 3.6 (python_requires ~=3.6)
install_jetpack4() {
    local worker=$PREFIX/worker-venv got
    # python3-libnvinfer: TensorRT 8.x's bindings for the system Python 3.6; python3-numpy 1.13
    # for them; cuda-nvcc and build-essential build pycuda; python3-venv for the worker's venv.
    run apt-get update
    run apt-get install -y --no-install-recommends \
        python3-libnvinfer python3-numpy python3-venv python3-dev build-essential curl ca-certificates
    [[ $DRY_RUN == 1 || -x /usr/local/cuda/bin/nvcc ]] ||
        die "no /usr/local/cuda/bin/nvcc: install the JetPack components (apt-get install nvidia-jetpack)"
    # the daemon's interpreter
    PBS_WORK=$(mktemp -d)
    trap 'rm -rf "$PBS_WORK"' EXIT
    run curl -fL --retry 3 -o "$PBS_WORK/$PBS_TARBALL" "$PBS_URL"
    if [[ $DRY_RUN == 0 ]]; then
        got=$(sha256sum "$PBS_WORK/$PBS_TARBALL" | cut -d' ' -f1)
        if [[ -n ${PBS_SHA256:-} ]]; then
            [[ $got == "$PBS_SHA256" ]] || die "$PBS_TARBALL: sha256 $got, want $PBS_SHA256"
        else
            say "$PBS_TARBALL sha256 $got (set PBS_SHA256 to pin it)"
        fi
    fi
    run mkdir -p "$PREFIX"
    run tar -C "$PREFIX" -xzf "$PBS_WORK/$PBS_TARBALL"   # -> $PREFIX/python
    PYTHON=$PREFIX/python/bin/python3
    [[ $DRY_RUN == 1 ]] || check_python
    # the TensorRT worker's interpreter: the system Python 3.6, seeing JetPack's tensorrt
    export CUDA_ROOT=/usr/local/cuda PATH=/usr/local/cuda/bin:$PATH
    [[ -x $worker/bin/python3 ]] || run /usr/bin/python3 -m venv --system-site-packages "$worker"
    run "$worker/bin/pip" install "pip<22"   # pip 21.3 is the last for Python 3.6
    run "$worker/bin/pip" install "pycuda==$PYCUDA_VERSION"
    run "$worker/bin/python3" -c \
        "import tensorrt, pycuda.driver; print('worker: Python 3.6, TensorRT', tensorrt.__version__)"
    # the daemon (no onnx extra: ONNX Runtime's aarch64 wheels need a newer glibc than 2.27)
    install_venv "$SRC_DIR" "numpy>=1.26,<2"
    install_bundle "$BUNDLE" default
    install_config "$SRC_DIR/deploy/jetson-tx2.toml"
    install_service
}

# install_service: the unit with this board's GPU device nodes (and jtop's group), then start it.
install_service() {
    # The GPU's device nodes differ by board and release (TX2/Xavier /dev/nvhost-*-gpu, Orin
    # /dev/nvgpu/igpu0/*): allow the ones this board has. jtop's group when jetson-stats is there.
    local nodes=() node groups=""
    for node in /dev/nvmap /dev/nvhost-* /dev/nvgpu/igpu0/* /dev/host1x-fence /dev/nvsciipc \
        /dev/nvidia*; do
        [[ -c $node ]] && nodes+=("$node")
    done
    group_exists jtop && groups="jtop"
    install_unit "$groups" "${nodes[@]}"
    check_config
    enable_service
    say "the first start builds the TensorRT plan for this GPU (minutes); it is cached in /var/cache/edge-tc"
}

if [[ $L4T_RELEASE == 32 ]]; then
    install_jetpack4
    exit 0
fi

# -- system packages ----------------------------------------------------------------------------
# python3-libnvinfer: TensorRT's Python bindings for the system Python (the PyPI 'tensorrt'
# wheels are not built for Jetson, so the tensorrt extra is not used); cuda-nvcc and the CUDA
# headers build pycuda; soapysdr-module-uhd drives USRPs (other SDRs: soapysdr-module-all).
run apt-get update
run apt-get install -y --no-install-recommends \
    python3-venv python3-dev python3-libnvinfer build-essential \
    python3-soapysdr soapysdr-tools soapysdr-module-uhd uhd-host
[[ $DRY_RUN == 1 || -x /usr/local/cuda/bin/nvcc ]] ||
    die "no /usr/local/cuda/bin/nvcc: install the JetPack components (apt-get install nvidia-jetpack)"
check_python

# -- the package --------------------------------------------------------------------------------
# numpy < 2: JetPack's TensorRT and SoapySDR bindings were built against NumPy 1.x.
export CUDA_ROOT=/usr/local/cuda PATH=/usr/local/cuda/bin:$PATH
install_venv "${SRC_DIR}[onnx]" "numpy>=1.26,<2" "pycuda>=2020.1"
run "$PREFIX/venv/bin/python" -c \
    "import tensorrt, pycuda.driver; print('TensorRT', tensorrt.__version__)"
install_bundle "$BUNDLE" default
install_config "$SRC_DIR/deploy/jetson-orin.toml"

# -- the service --------------------------------------------------------------------------------
install_service
