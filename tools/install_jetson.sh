#!/usr/bin/env bash
# Install edge-tc as a systemd service on a Jetson with JetPack 6 (L4T R36: Orin, Ubuntu 22.04,
# Python 3.10, TensorRT 10.3) or JetPack 5 (L4T R35: Orin/Xavier, Ubuntu 20.04: needs a
# Python >= 3.10 given with --python, see docs/operations.md).
#
#   sudo tools/install_jetson.sh [--no-start] [--python PATH] [--bundle DIR]
#   tools/install_jetson.sh --dry-run [--l4t-release 36]    # print the steps, change nothing
#
# JetPack 4.x (L4T R32: TX2, Nano, Xavier with Python 3.6) is refused: edge-tc needs Python
# >= 3.10 and JetPack 4's TensorRT bindings exist for Python 3.6 only. What can run there is
# in docs/operations.md, "Jetson TX2 / JetPack 4.6".
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

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
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
    32) die "L4T R32 (JetPack 4.x, Python 3.6) is not supported: edge-tc needs Python >= 3.10 and
JetPack 4's TensorRT bindings are built for Python 3.6 only. See docs/operations.md,
'Jetson TX2 / JetPack 4.6', for what runs there (ZeroMQ IQ streaming to another host; a
self-built Python 3.10 with the CPU engines)." ;;
    *) die "L4T R$L4T_RELEASE: unknown JetPack release (this script knows R35 and R36)" ;;
esac

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
# The GPU's device nodes differ by board and release (TX2/Xavier /dev/nvhost-*-gpu, Orin
# /dev/nvgpu/igpu0/*): allow the ones this board has. jtop's group when jetson-stats is there.
nodes=()
for node in /dev/nvmap /dev/nvhost-* /dev/nvgpu/igpu0/* /dev/host1x-fence /dev/nvsciipc \
    /dev/nvidia*; do
    [[ -c $node ]] && nodes+=("$node")
done
groups=""
group_exists jtop && groups="jtop"
install_unit "$groups" "${nodes[@]}"
check_config
enable_service
say "the first start builds the TensorRT plan for this GPU (minutes); it is cached in /var/cache/edge-tc"
