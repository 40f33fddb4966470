#!/usr/bin/env bash
# CI stage: edge-tc on arm64 (the Raspberry Pi's and the Jetson's architecture) under qemu-user.
#
#   tools/ci_arm64.sh [--cache DIR] [--duration S] [--keep]
#
# Builds (once; cached as DIR/bookworm-arm64-root.tar.gz) an arm64 Debian bookworm root with
# debootstrap from Debian's packages, runs it through qemu-user-static registered in binfmt_misc,
# installs the package from this tree the way tools/install_rpi_coral.sh does (a venv with the
# system's site-packages, numpy < 2; the root with that venv is cached too, keyed by
# pyproject.toml's sha256, so the dependencies are installed again only when it changes; the
# package itself is an editable install of the tree copied in on every run), then runs
# `edge-tc run --demo` with the TFLite (LiteRT) and the ONNX Runtime engines and checks from the
# daemon's own summary line that packets were detected and classified and that every one was
# counted (detected = classified + failed + dropped). pip's download cache is kept in DIR/pip.
#
# Board-only parts of install_rpi_coral.sh are not run here (they need the board or a download
# outside PyPI/Debian): the Edge TPU runtime (libedgetpu1-std) and the matching tflite_runtime
# wheel (feranick's GitHub releases), the gasket/apex PCIe driver (DKMS, the Pi's kernel
# headers), udev rules, the systemd unit. LiteRT (ai-edge-litert, the `tflite` extra) stands in
# for tflite_runtime: the same interpreter API, on the CPU.
#
# The qemu trap: ONNX Runtime and LiteRT crash at session creation under qemu-user when the
# host's /proc and /sys are bind-mounted into the root: their CPU detection (pytorch/cpuinfo)
# reads the host's x86 topology from /sys and /proc/cpuinfo and fails on it. This stage
# therefore mounts neither; without them both runtimes run (cpuinfo falls back to defaults).
# (Checked: with the host's /proc and /sys bind-mounted, an ONNX Runtime session and a LiteRT
# interpreter on models/default both die with "qemu: uncaught target signal 11", exit 139.)
#
# Exit status: 0 passed, 1 failed, 77 skipped (no binfmt_misc, no root, no debootstrap): the
# reason is printed on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
CACHE=${EDGE_TC_CI_CACHE:-$HOME/.cache/edge-tc-ci}
DURATION=15
KEEP=0
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
while [[ $# -gt 0 ]]; do
    case $1 in
        --cache) CACHE=${2:?--cache needs a directory}; shift ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift ;;
        --keep) KEEP=1 ;;
        -h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) printf 'ci_arm64: unknown option %s\n' "$1" >&2; exit 2 ;;
    esac
    shift
done

say() { printf 'ci_arm64: %s\n' "$*"; }
skip() { say "SKIP: $*"; exit 77; }
fail() { say "FAIL: $*"; exit 1; }
stamp() { date +%s; }
T0=$(stamp)

# -- host: root, debootstrap, qemu-aarch64 in binfmt_misc ---------------------------------------
[[ $(id -u) == 0 ]] || skip "needs root (debootstrap, chroot, binfmt_misc registration)"
command -v debootstrap > /dev/null || skip "debootstrap missing (apt-get install debootstrap)"
QEMU=/usr/libexec/qemu-binfmt/aarch64-binfmt-P
[[ -x $QEMU ]] || skip "qemu-user-static missing (apt-get install qemu-user-static)"
BINFMT=/proc/sys/fs/binfmt_misc
if [[ ! -e $BINFMT/register ]]; then
    err=$(mount -t binfmt_misc binfmt_misc "$BINFMT" 2>&1) ||
        skip "binfmt_misc is not mounted and 'mount -t binfmt_misc binfmt_misc $BINFMT' failed: $err"
fi
if [[ ! -e $BINFMT/qemu-aarch64 ]]; then
    # Debian's own registration line (qemu-user-static's /usr/lib/binfmt.d/qemu-aarch64.conf),
    # with F (the interpreter is opened now, so it works inside the chroot without a copy).
    line=$(sed 's/:[A-Z]*$/:OCPF/' /usr/lib/binfmt.d/qemu-aarch64.conf)
    err=$( (printf '%s' "$line" > "$BINFMT/register") 2>&1) ||
        skip "cannot register qemu-aarch64 in $BINFMT/register: $err"
fi
[[ $(head -1 "$BINFMT/qemu-aarch64") == enabled ]] || skip "qemu-aarch64 binfmt entry is disabled"

# -- the arm64 root (cached) --------------------------------------------------------------------
mkdir -p "$CACHE/pip"
TARBALL=$CACHE/bookworm-arm64-root.tar.gz
if [[ ! -f $TARBALL ]]; then
    say "building the arm64 bookworm root with debootstrap (cached as $TARBALL)"
    build=$(mktemp -d)
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-dev,ca-certificates,libusb-1.0-0 \
        bookworm "$build/root" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 ||
        { tail -20 "$CACHE/debootstrap.log"; rm -rf "$build"; fail "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    rm -rf "$build/root/var/cache/apt/archives/"*.deb
    tar -C "$build/root" -czf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$build"
    say "root built in $(($(stamp) - T0)) s"
fi
T1=$(stamp)
DEPS_KEY=$(sha256sum pyproject.toml | cut -c1-16)
INSTALLED=$CACHE/bookworm-arm64-edge-tc-$DEPS_KEY.tar.gz
work=$(mktemp -d)
root=$work/root
cleanup() {
    umount "$root/root/.cache/pip" 2> /dev/null || true
    if [[ $KEEP == 0 ]]; then rm -rf "$work"; else say "root kept in $root"; fi
}
trap cleanup EXIT
mkdir -p "$root"
if [[ -f $INSTALLED ]]; then
    say "the root with the dependencies installed: $INSTALLED"
    tar -C "$root" -xzf "$INSTALLED"
else
    tar -C "$root" -xzf "$TARBALL"
fi
[[ $(chroot "$root" uname -m) == aarch64 ]] || fail "the chroot does not run aarch64 code"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The CA bundle pip trusts on the host (a TLS-intercepting proxy's CA is in it where there is one).
HOST_CA=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}
cp "$HOST_CA" "$root/etc/ssl/certs/host-ca-bundle.crt"
mkdir -p "$root/root/.cache/pip" "$root/opt/edge-tc/src"
mount --bind "$CACHE/pip" "$root/root/.cache/pip"
# The tree as committed plus local edits, without venvs, caches and build outputs.
rm -rf "$root/opt/edge-tc/src" && mkdir -p "$root/opt/edge-tc/src"
tar -C "$SRC" --exclude=.venv --exclude=.git --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.mypy_cache --exclude=.ruff_cache --exclude=build -cf - . |
    tar -C "$root/opt/edge-tc/src" -xf -

# -- install as install_rpi_coral.sh does (install_common.sh's install_venv) --------------------
say "installing edge-tc[tflite,onnx] into a venv (system site-packages, numpy < 2)"
in_root() {
    chroot "$root" /usr/bin/env -i HOME=/root PATH=/opt/edge-tc/venv/bin:/usr/bin:/bin \
        PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt PIP_DEFAULT_TIMEOUT=180 "$@"
}
if [[ ! -f $INSTALLED ]]; then
    in_root python3 -m venv --system-site-packages /opt/edge-tc/venv
    in_root pip install -q --disable-pip-version-check \
        "numpy>=1.26,<2" -e "/opt/edge-tc/src[tflite,onnx]" || fail "pip install failed"
    umount "$root/root/.cache/pip"
    rm -f "$CACHE"/bookworm-arm64-edge-tc-*.tar.gz  # the previous dependency set
    tar -C "$root" --exclude=./opt/edge-tc/src -czf "$INSTALLED.tmp" . && mv "$INSTALLED.tmp" "$INSTALLED"
    mount --bind "$CACHE/pip" "$root/root/.cache/pip"
fi
T2=$(stamp)
say "installed in $((T2 - T1)) s"

# -- run the demo with each engine --------------------------------------------------------------
for engine in tflite onnxruntime; do
    say "edge-tc run --demo --engine $engine --duration $DURATION"
    log=$work/demo-$engine.log
    in_root sh -c "cd /opt/edge-tc/src && edge-tc run --demo --engine $engine --duration $DURATION --log-level info" \
        > "$log" 2>&1 || { tail -30 "$log"; fail "edge-tc run --demo --engine $engine exited non-zero"; }
    summary=$(grep -o 'stopped: detected [0-9]*, classified [0-9]*, failed [0-9]*, dropped {.*}' "$log" | tail -1) ||
        { tail -30 "$log"; fail "$engine: no 'stopped:' summary line in the daemon's log"; }
    say "$engine: $summary"
    python3 - "$summary" "$engine" << 'EOF' || { grep -m3 ERROR "$log"; fail "$engine: counts do not add up, nothing was classified or packets failed"; }
import ast, re, sys
summary, engine = sys.argv[1], sys.argv[2]
m = re.match(r"stopped: detected (\d+), classified (\d+), failed (\d+), dropped (\{.*\})", summary)
detected, classified, failed = (int(m.group(i)) for i in (1, 2, 3))
dropped = sum(ast.literal_eval(m.group(4)).values())
assert classified > 0, f"{engine}: nothing classified"
assert failed == 0, f"{engine}: {failed} packets failed (the daemon's log says why)"
assert detected == classified + failed + dropped, f"{engine}: {detected} != {classified}+{failed}+{dropped}"
EOF
done
say "PASS: root $((T1 - T0)) s, install $((T2 - T1)) s, demos $(($(stamp) - T2)) s"
