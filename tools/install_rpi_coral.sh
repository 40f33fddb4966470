#!/usr/bin/env bash
# Install edge-tc as a systemd service on a Raspberry Pi 4/5 with Raspberry Pi OS Bookworm
# 64-bit (Debian 12, Python 3.11) and a Coral Edge TPU (USB Accelerator, or PCIe/M.2 with --pci).
#
#   sudo tools/install_rpi_coral.sh --bundle DIR [--pci] [--no-start]
#   tools/install_rpi_coral.sh --dry-run --bundle DIR     # print the steps, change nothing
#
# --bundle DIR: a bundle holding the Edge TPU-compiled model model_int8_edgetpu.tflite (compile
# it on an x86-64 host: docs/engines.md, "Edge TPU"); installed as
# /opt/edge-tc/models/default-edgetpu, which deploy/rpi-coral.toml names.
#
# The Edge TPU runtime and the TFLite runtime must be built for each other (Coral's own
# libedgetpu1-std 16.0 matches TF 2.5 only, and stock tflite-runtime >= 2.12 crashes with it):
# this installs the matched pair libedgetpu1-std 16.0tf2.17.1 and tflite_runtime 2.17.1
# (cp311, aarch64) from feranick's rebuilds, as Frigate does. Set EDGETPU_DEB_SHA256 and
# TFLITE_WHEEL_SHA256 to pin the downloads (their digests are printed when unset).
set -euo pipefail
# shellcheck source=tools/install_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/install_common.sh"

EDGETPU_VERSION="16.0tf2.17.1-1"
EDGETPU_DEB="libedgetpu1-std_${EDGETPU_VERSION}.bookworm_arm64.deb"
EDGETPU_URL="https://github.com/feranick/libedgetpu/releases/download/16.0TF2.17.1-1/$EDGETPU_DEB"
TFLITE_WHEEL="tflite_runtime-2.17.1-cp311-cp311-linux_aarch64.whl"
TFLITE_URL="https://github.com/feranick/TFlite-builds/releases/download/v2.17.1/$TFLITE_WHEEL"
GASKET_DEB="gasket-dkms_1.0-18.2_all.deb"
GASKET_URL="https://github.com/feranick/gasket-driver/releases/download/1.0-18.2/$GASKET_DEB"
BUNDLE=""
PCI=0
CHECK_OS=1

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --no-start) START=0 ;;
        --bundle) BUNDLE=${2:?--bundle needs a directory}; shift ;;
        --pci) PCI=1 ;;
        --any-os) CHECK_OS=0 ;;
        -h | --help) usage ;;
        *) printf 'install: unknown option %s\n' "$1" >&2; usage 2 ;;
    esac
    shift
done
need_root
[[ -n $BUNDLE ]] || die "--bundle DIR: a bundle with model_int8_edgetpu.tflite (docs/engines.md, 'Edge TPU')"
[[ -f $BUNDLE/model_int8_edgetpu.tflite || $DRY_RUN == 1 ]] ||
    die "$BUNDLE has no model_int8_edgetpu.tflite: compile the bundle's model_int8.tflite with edgetpu_compiler on an x86-64 host first (docs/engines.md, 'Edge TPU')"

if [[ $CHECK_OS == 1 ]]; then
    [[ $(os_release VERSION_CODENAME) == bookworm ]] ||
        die "this script is for Raspberry Pi OS Bookworm (found '$(os_release PRETTY_NAME)'; --any-os to go on)"
    [[ $(uname -m) == aarch64 ]] ||
        die "$(uname -m): install the 64-bit Raspberry Pi OS (no aarch64-only runtime wheels for armhf)"
fi

# fetch URL FILE SHA256: download, then check or print the digest
fetch() {
    local url=$1 file=$2 want=${3:-}
    run curl -fL --retry 3 -o "$file" "$url"
    if [[ $DRY_RUN == 1 ]]; then
        return
    fi
    local got
    got=$(sha256sum "$file" | cut -d' ' -f1)
    if [[ -n $want ]]; then
        [[ $got == "$want" ]] || die "$file: sha256 $got, want $want"
    else
        say "$file sha256 $got (set it in the environment to pin it)"
    fi
}

# -- system packages ----------------------------------------------------------------------------
run apt-get update
run apt-get install -y --no-install-recommends \
    python3-venv python3-dev curl ca-certificates libusb-1.0-0 \
    python3-soapysdr soapysdr-tools soapysdr-module-hackrf hackrf
check_python

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The Edge TPU runtime; its udev rule gives the USB Accelerator to the plugdev group.
fetch "$EDGETPU_URL" "$work/$EDGETPU_DEB" "${EDGETPU_DEB_SHA256:-}"
run apt-get install -y "$work/$EDGETPU_DEB"
groups=""
if [[ $PCI == 1 ]]; then
    # PCIe/M.2 Coral: the gasket/apex kernel driver (DKMS) and a group for /dev/apex_0. A Pi 5
    # also needs in /boot/firmware/config.txt: dtparam=pciex1 and dtoverlay=pcie-32bit-dma-pi5,
    # and the 4K-page kernel (kernel=kernel8.img): see docs/operations.md; not edited here.
    fetch "$GASKET_URL" "$work/$GASKET_DEB" "${GASKET_DEB_SHA256:-}"
    run apt-get install -y dkms raspberrypi-kernel-headers "$work/$GASKET_DEB"
    group_exists apex || run groupadd --system apex
    echo 'SUBSYSTEM=="apex", MODE="0660", GROUP="apex"' |
        write_file /etc/udev/rules.d/65-apex.rules 0644
    run udevadm control --reload-rules
    run udevadm trigger --subsystem-match=apex
    groups="apex"
fi

# -- the package --------------------------------------------------------------------------------
# No tflite extra: the interpreter is the tflite_runtime built for this libedgetpu (the engine
# prefers tflite_runtime). numpy < 2: that wheel and Debian's SoapySDR bindings use NumPy 1.x.
fetch "$TFLITE_URL" "$work/$TFLITE_WHEEL" "${TFLITE_WHEEL_SHA256:-}"
install_venv "$SRC_DIR" "numpy>=1.26,<2" "$work/$TFLITE_WHEEL"
run "$PREFIX/venv/bin/python" -c \
    "from tflite_runtime.interpreter import load_delegate; load_delegate('libedgetpu.so.1'); print('Edge TPU delegate loads')" ||
    say "the Edge TPU delegate did not load (is the Coral plugged in?); the service retries at start"
install_bundle "$BUNDLE" default-edgetpu
install_config "$SRC_DIR/deploy/rpi-coral.toml"

# -- the service --------------------------------------------------------------------------------
install_unit "$groups"
check_config
enable_service
