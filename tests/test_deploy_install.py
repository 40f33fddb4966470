"""Install scripts and per-board configs: the configs pass `edge-tc check-config`, the scripts
are valid bash whose --dry-run plan installs what the unit runs, and the drop-in they write
passes `systemd-analyze verify` next to the unit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_daemon.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [ROOT / "tools" / n for n in ("install_common.sh", "install_jetson.sh",
                                         "install_rpi_coral.sh")]  # fmt: skip
CONFIGS = {
    "jetson-orin.toml": ("/opt/edge-tc/models/default", "tensorrt"),
    "jetson-tx2.toml": ("/opt/edge-tc/models/default", "tensorrt"),
    "rpi-coral.toml": ("/opt/edge-tc/models/default-edgetpu", "tflite"),
}
EDGE_TC = [sys.executable, "-m", "edge_core.cli"]


def dry_run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "tools" / script), "--dry-run", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def written_file(plan: str, path: str) -> str:
    """The content a --dry-run plan shows for `+ write PATH`."""
    match = re.search(rf"^\+ write {re.escape(path)} \(mode \d+\)\n((?:\|   .*\n?)*)", plan, re.M)
    assert match, plan
    return "".join(line[4:] + "\n" for line in match.group(1).splitlines())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_board_config_passes_check_config(name):
    path = ROOT / "deploy" / name
    bundle, engine = CONFIGS[name]
    # the bundle is where the install script puts it, which is not here: check with ours
    done = subprocess.run(
        [*EDGE_TC, "check-config", str(path), "--set", f"bundle={ROOT / 'models' / 'default'}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{path}: OK"
    config = load_config(path)
    assert config.bundle == bundle and config.engine.type == engine
    assert config.publisher.bind.startswith("tcp://127.0.0.1:")
    assert config.metrics.addr == "127.0.0.1"


def test_check_config_rejects_a_broken_board_config(tmp_path):
    broken = (ROOT / "deploy" / "jetson-orin.toml").read_text().replace("fp16", "fp8")
    (tmp_path / "x.toml").write_text(broken)
    done = subprocess.run(
        [*EDGE_TC, "check-config", str(tmp_path / "x.toml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "engine.precision" in done.stderr and "fp8" in done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_valid_bash(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_scripts_pass_shellcheck():
    done = subprocess.run(
        ["shellcheck", "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout


def unit_exec_start() -> str:
    unit = (ROOT / "systemd" / "edge-tc.service").read_text()
    return re.search(r"^ExecStart=(\S+) run --config (\S+)$", unit, re.M).groups()


def test_jetson_plan_installs_what_the_unit_runs():
    done = dry_run("install_jetson.sh", "--l4t-release", "36")
    assert done.returncode == 0, done.stderr
    plan = done.stdout
    binary, config = unit_exec_start()
    venv = binary.removesuffix("/bin/edge-tc")
    assert f"-m venv --system-site-packages {venv}\n" in plan
    assert re.search(rf"{venv}/bin/pip install \S+\\\[onnx\\\] .*pycuda", plan)
    assert f"install -m 0644 {ROOT}/deploy/jetson-orin.toml {config}\n" in plan
    assert f"+ {binary} check-config {config}\n" in plan
    assert f"cp -r {ROOT}/models/default /opt/edge-tc/models/default.new" in plan
    assert "install -m 0644 " + str(ROOT / "systemd" / "edge-tc.service") in plan
    assert plan.index("check-config") < plan.index("systemctl enable --now edge-tc.service")


def test_jetpack_4_plan_runs_the_daemon_on_cpython_311_and_tensorrt_on_python_36():
    done = dry_run("install_jetson.sh", "--l4t-release", "32")
    assert done.returncode == 0, done.stderr
    plan = done.stdout
    binary, config = unit_exec_start()
    venv = binary.removesuffix("/bin/edge-tc")
    # the daemon: python-build-standalone's aarch64 CPython 3.11, unpacked under /opt/edge-tc
    assert re.search(r"^\+ curl .* https://github\.com/astral-sh/python-build-standalone/"
                     r"releases/download/20240814/cpython-3\.11\.9%2B20240814-aarch64-unknown-"
                     r"linux-gnu-install_only\.tar\.gz$", plan, re.M)  # fmt: skip
    assert f"+ /opt/edge-tc/python/bin/python3 -m venv --system-site-packages {venv}\n" in plan
    assert re.search(rf"^\+ {venv}/bin/pip install {re.escape(str(ROOT))} ", plan, re.M)
    # the worker: the system Python 3.6 with JetPack's tensorrt (apt) and pycuda 2021.1
    assert "python3-libnvinfer" in plan
    worker = "/opt/edge-tc/worker-venv"
    assert f"+ /usr/bin/python3 -m venv --system-site-packages {worker}\n" in plan
    assert f"+ {worker}/bin/pip install pycuda==2021.1\n" in plan
    tx2 = load_config(ROOT / "deploy" / "jetson-tx2.toml")
    assert tx2.engine.isolation == "process"
    assert tx2.engine.worker_python == f"{worker}/bin/python3"
    assert f"install -m 0644 {ROOT}/deploy/jetson-tx2.toml {config}\n" in plan
    assert f"+ {binary} check-config {config}\n" in plan
    assert plan.index("check-config") < plan.index("systemctl enable --now edge-tc.service")
    assert "### Jetson TX2 / JetPack 4.6" in (ROOT / "docs" / "operations.md").read_text()


def test_rpi_coral_needs_a_compiled_bundle():
    done = dry_run("install_rpi_coral.sh", "--any-os")
    assert done.returncode == 1 and "model_int8_edgetpu.tflite" in done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
@pytest.mark.parametrize(
    "script, args",
    [
        ("install_rpi_coral.sh", ["--any-os", "--bundle", "models/default", "--pci"]),
        ("install_jetson.sh", ["--l4t-release", "36"]),
    ],
    ids=["rpi-pci", "jetson"],
)
def test_the_board_drop_in_verifies_with_the_unit(tmp_path, script, args):
    done = dry_run(script, *args)
    assert done.returncode == 0, done.stderr
    drop_in = written_file(done.stdout, "/etc/systemd/system/edge-tc.service.d/50-board.conf")
    assert drop_in.startswith("# Written by ") and "[Service]\n" in drop_in
    if "--pci" in args:
        assert "SupplementaryGroups=apex\n" in drop_in
        assert 'SUBSYSTEM=="apex", MODE="0660", GROUP="apex"' in written_file(
            done.stdout, "/etc/udev/rules.d/65-apex.rules"
        )
    binary, _ = unit_exec_start()
    unit = tmp_path / "edge-tc.service"
    unit.write_text(
        (ROOT / "systemd" / "edge-tc.service").read_text().replace(binary, sys.executable)
    )
    (tmp_path / "edge-tc.service.d").mkdir()
    (tmp_path / "edge-tc.service.d" / "50-board.conf").write_text(
        drop_in + "DeviceAllow=/dev/null rw\n"
    )
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr


def test_install_steps_for_real_into_a_temporary_root(tmp_path):
    """The shared steps run (not --dry-run) with their target directories under tmp_path: the
    bundle copy, the config that is never overwritten once edited, the unit and its drop-ins."""
    script = f"""
set -euo pipefail
source {ROOT}/tools/install_common.sh
PREFIX={tmp_path}/opt ETC_DIR={tmp_path}/etc UNIT_DIR={tmp_path}/units
install_bundle {ROOT}/models/default default
install_config {ROOT}/deploy/jetson-orin.toml
echo '# edited' >> {tmp_path}/etc/edge-tc.toml
install_config {ROOT}/deploy/jetson-orin.toml
install_unit "apex" /dev/null
"""
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "keeping your" in done.stdout
    example = (ROOT / "deploy" / "jetson-orin.toml").read_text()
    assert (tmp_path / "etc" / "edge-tc.toml").read_text() == example + "# edited\n"
    assert (tmp_path / "etc" / "edge-tc.toml.new").read_text() == example
    bundle = tmp_path / "opt" / "models" / "default"
    shipped = sorted(p.name for p in (ROOT / "models" / "default").iterdir())
    assert sorted(p.name for p in bundle.iterdir()) == shipped
    assert not (tmp_path / "opt" / "models" / "default.new").exists()
    units = tmp_path / "units"
    unit = (ROOT / "systemd" / "edge-tc.service").read_text()
    assert (units / "edge-tc.service").read_text() == unit
    drop_in = (units / "edge-tc.service.d" / "50-board.conf").read_text()
    assert drop_in.endswith("[Service]\nSupplementaryGroups=apex\nDeviceAllow=/dev/null rw\n")
    version = subprocess.run(["systemctl", "--version"], capture_output=True, text=True)
    newer = version.returncode == 0 and int(version.stdout.split()[1]) >= 245
    assert (units / "edge-tc.service.d" / "hardening-v245.conf").exists() == newer
