# shellcheck shell=bash
# Shared steps of tools/install_jetson.sh and tools/install_rpi_coral.sh (sourced, not run).
#
# Layout on the device (what systemd/edge-tc.service expects):
#   /opt/edge-tc/venv              the package and its Python dependencies
#   /opt/edge-tc/models/<bundle>   model bundles
#   /opt/edge-tc/docs              docs/operations.md and friends
#   /etc/edge-tc/edge-tc.toml      the config (never overwritten: a changed one goes to .new)
#   /etc/systemd/system/edge-tc.service (+ edge-tc.service.d/ drop-ins)
#
# --dry-run prints every command and file instead of running or writing it (and needs no root).

PREFIX=/opt/edge-tc
ETC_DIR=/etc/edge-tc
UNIT_DIR=/etc/systemd/system
SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
START=1
PYTHON=python3
MIN_PYTHON="3.10"

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

# run CMD...: run it, or print it under --dry-run
run() {
    if [[ $DRY_RUN == 1 ]]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# write_file PATH MODE < content: write it, or print it under --dry-run
write_file() {
    local path=$1 mode=$2 content
    content=$(cat)
    if [[ $DRY_RUN == 1 ]]; then
        printf '+ write %s (mode %s)\n%s\n' "$path" "$mode" "$content" | sed '2,$s/^/|   /'
    else
        mkdir -p "$(dirname "$path")"
        printf '%s\n' "$content" > "$path"
        chmod "$mode" "$path"
    fi
}

need_root() {
    [[ $DRY_RUN == 1 || $EUID == 0 ]] || die "run as root (sudo $0 ...), or with --dry-run"
}

os_release() {  # os_release KEY -> its value in /etc/os-release
    local key=$1
    [[ -r /etc/os-release ]] || { echo ""; return; }
    sed -n "s/^${key}=\"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" /etc/os-release
}

check_python() {  # the interpreter must be >= 3.10 (the package's requires-python)
    command -v "$PYTHON" > /dev/null || die "no Python interpreter '$PYTHON'"
    local version
    version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    "$PYTHON" -c "import sys; sys.exit(sys.version_info[:2] < (3, 10))" ||
        die "$PYTHON is Python $version; edge-tc needs Python >= $MIN_PYTHON (docs/operations.md)"
    say "Python $version ($PYTHON)"
}

# install_venv PIP_ARGS...: the venv (seeing the system's site-packages, for the vendor Python
# bindings apt installs: SoapySDR, TensorRT), then edge-tc from this checkout and PIP_ARGS
install_venv() {
    local venv=$PREFIX/venv
    run mkdir -p "$PREFIX"
    if [[ ! -x $venv/bin/python ]]; then
        run "$PYTHON" -m venv --system-site-packages "$venv"
    fi
    run "$venv/bin/pip" install --upgrade pip
    run "$venv/bin/pip" install "$@"
    run mkdir -p "$PREFIX/docs"
    run cp "$SRC_DIR/docs/operations.md" "$SRC_DIR/docs/daemon.md" "$SRC_DIR/docs/sources.md" \
        "$SRC_DIR/docs/engines.md" "$PREFIX/docs/"
}

# install_bundle SRC NAME: a model bundle to $PREFIX/models/NAME (read-only for the service)
install_bundle() {
    local src=$1 name=$2
    [[ -f $src/manifest.json ]] || die "$src is not a model bundle (no manifest.json)"
    run mkdir -p "$PREFIX/models"
    run rm -rf "$PREFIX/models/$name.new"
    run cp -r "$src" "$PREFIX/models/$name.new"
    run rm -rf "$PREFIX/models/$name"
    run mv "$PREFIX/models/$name.new" "$PREFIX/models/$name"
    run chmod -R a+rX,go-w "$PREFIX/models/$name"
}

# install_config EXAMPLE: /etc/edge-tc/edge-tc.toml from EXAMPLE, unless one exists that differs
install_config() {
    local example=$1 target=$ETC_DIR/edge-tc.toml
    run mkdir -p "$ETC_DIR"
    if [[ -f $target ]] && ! cmp -s "$example" "$target"; then
        say "keeping your $target; the new example is $target.new"
        run install -m 0644 "$example" "$target.new"
    else
        run install -m 0644 "$example" "$target"
    fi
}

systemd_version() {
    systemctl --version 2> /dev/null | sed -n '1s/^systemd \([0-9]*\).*/\1/p'
}

# install_unit GROUPS DEVICE_NODES...: the unit, the newer-systemd hardening when systemd is
# >= 245, and a drop-in with this board's extra groups and device nodes
install_unit() {
    local groups=$1
    shift
    local version dropins=$UNIT_DIR/edge-tc.service.d
    run mkdir -p "$dropins"
    run install -m 0644 "$SRC_DIR/systemd/edge-tc.service" "$UNIT_DIR/edge-tc.service"
    version=$(systemd_version)
    if [[ -n $version && $version -ge 245 ]]; then
        run install -m 0644 "$SRC_DIR/deploy/systemd/edge-tc.service.d/hardening-v245.conf" \
            "$dropins/hardening-v245.conf"
    else
        say "systemd ${version:-?} < 245: without deploy/systemd/edge-tc.service.d/hardening-v245.conf"
    fi
    {
        echo "# Written by $(basename "$0"): this board's groups and device nodes."
        echo "[Service]"
        [[ -n $groups ]] && echo "SupplementaryGroups=$groups"
        local node
        for node in "$@"; do
            echo "DeviceAllow=$node rw"
        done
    } | write_file "$dropins/50-board.conf" 0644
}

# check_config: the installed config, as the service will read it
check_config() {
    run "$PREFIX/venv/bin/edge-tc" check-config "$ETC_DIR/edge-tc.toml"
}

enable_service() {
    run systemctl daemon-reload
    if [[ $START == 1 ]]; then
        run systemctl enable --now edge-tc.service
        say "started: systemctl status edge-tc; journalctl -u edge-tc -f"
    else
        run systemctl enable edge-tc.service
        say "enabled, not started (--no-start): systemctl start edge-tc"
    fi
}

# group_exists NAME
group_exists() { getent group "$1" > /dev/null; }
