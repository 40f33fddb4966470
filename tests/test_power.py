"""Power meters on fake sysfs trees (tests/data/power, laid out and in units as the real ones),
a fake jtop and a fake pynvml (tests/fakes); a fake clock makes the energy sums exact."""

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_core.typed_config import ConfigProblems
from edge_daemon.power import (
    CpuEstimateMeter,
    Ina2xxMeter,
    Ina3221Meter,
    NoPowerMeter,
    PowerConfig,
    PowerReading,
    RaplMeter,
    ina3221_rails,
    open_power_meter,
    parse_pmic_adc,
    process_tree_cpu_seconds,
    rapl_zones,
)

DATA = Path(__file__).parent / "data" / "power"
FAKES = Path(__file__).parent / "fakes"
MAX_RANGE_UJ = 262143328850
NO_VCGENCMD = "/nonexistent/vcgencmd"
PI5_PMIC_OUTPUT = DATA / "rpi5" / "pmic_read_adc.txt"
PI5_PMIC_WATTS = 3.29290306186204
"""Volts x amps of the 12 rails of PI5_PMIC_OUTPUT with both lines, added by hand (VDD_CORE
2.5 A x 0.85 V = 2.125 W, 3V3_SYS 0.06440400 A x 3.30590000 V, ...); EXT5V_V and BATT_V have
no current line."""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def tree(tmp_path):
    """A writable copy of one fake sysfs tree."""

    def copy(name: str) -> Path:
        shutil.copytree(DATA / name, tmp_path / name)
        return tmp_path / name

    return copy


@pytest.fixture
def no_vendor_modules(monkeypatch):
    """jtop and pynvml not importable, whatever is installed."""
    monkeypatch.setitem(sys.modules, "jtop", None)
    monkeypatch.setitem(sys.modules, "pynvml", None)


def _fake(monkeypatch, name: str):
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def _write(path: Path, value) -> None:
    path.write_text(f"{value}\n")


def _config(root: Path | str, **kwargs) -> PowerConfig:
    return PowerConfig(sysfs_root=str(root), **kwargs)


# -- INA3221 ------------------------------------------------------------------------------------
def test_tx2_iio_rails_and_the_vdd_in_total(tree, clock, no_vendor_modules):
    root = tree("tx2")
    rails = ina3221_rails(root)
    assert [r.name for r in rails] == ["VDD_SYS_GPU", "VDD_SYS_SOC", "VDD_4V0_WIFI", "VDD_IN",
                                       "VDD_SYS_CPU", "VDD_SYS_DDR"]  # fmt: skip
    meter = open_power_meter(_config(root), clock)
    assert isinstance(meter, Ina3221Meter) and [r.name for r in meter.rails] == ["VDD_IN"]
    assert "jtop: not installed" in meter.reason
    first = meter.read()
    assert first.watts == pytest.approx(3.814) and first.joules_total == 0.0
    _write(root / "bus/i2c/drivers/ina3221x/0-0041/iio:device1/in_power0_input", 5000)
    clock.now += 2.0
    second = meter.read()
    assert second.watts == pytest.approx(5.0)
    assert second.joules_total == pytest.approx((3.814 + 5.0) / 2 * 2.0)  # trapezoid


def test_orin_hwmon_volts_times_amps_skipping_sums_and_other_hwmons(tree, clock):
    root = tree("orin_nx")
    assert [r.name for r in ina3221_rails(root)] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    meter = open_power_meter(_config(root, type="ina3221"), clock)
    assert meter.read().watts == pytest.approx(5.072 * 1.440)
    _write(root / "class/hwmon/hwmon1/curr1_input", 2000)
    clock.now += 0.5
    reading = meter.read()
    assert reading.watts == pytest.approx(5.072 * 2.0)
    assert reading.joules_total == pytest.approx((5.072 * 1.44 + 5.072 * 2.0) / 2 * 0.5)


def test_agx_orin_without_vdd_in_sums_the_connected_rails(tree, clock):
    root = tree("agx_orin")
    meter = open_power_meter(_config(root, type="ina3221"), clock)
    assert [r.name for r in meter.rails] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0",
                                             "VDDQ_VDD2_1V8AO"]  # fmt: skip
    expected = 4.968 * 1.2 + 4.968 * 0.4 + 4.976 * 0.85 + 4.976 * 0.12
    assert meter.read().watts == pytest.approx(expected)


def test_chosen_rails_and_an_unknown_rail(tree, clock, no_vendor_modules):
    root = tree("tx2")
    meter = open_power_meter(_config(root, rails=("VDD_SYS_CPU", "VDD_SYS_GPU")), clock)
    assert meter.read().watts == pytest.approx(0.305 + 0.152)
    none = open_power_meter(_config(root, type="ina3221", rails=("VDD_GPU",)), clock)
    assert isinstance(none, NoPowerMeter)
    assert "power.type = 'ina3221' cannot be read" in none.reason
    assert "power.rails ['VDD_GPU'] not among the rails" in none.reason
    assert none.read().watts is None and none.read().joules_total is None


# -- RAPL ---------------------------------------------------------------------------------------
def test_rapl_counts_top_level_packages_and_unwraps_each(tree, clock, no_vendor_modules):
    root = tree("rapl")
    assert [z.name for z in rapl_zones(root)] == ["package-0", "package-1"]
    meter = open_power_meter(_config(root), clock)
    assert isinstance(meter, RaplMeter)
    assert "ina3221: no" in meter.reason and "nvml: not installed" in meter.reason
    first = meter.read()
    assert first.watts is None and first.joules_total == 0.0
    powercap = root / "class/powercap"
    _write(powercap / "intel-rapl:0/energy_uj", 1_000_000)  # wrapped past max_energy_range_uj
    _write(powercap / "intel-rapl:1/energy_uj", 6_000_000)
    _write(powercap / "intel-rapl:0:0/energy_uj", 99_999_999)  # a subzone: not counted again
    clock.now += 2.0
    second = meter.read()
    joules = ((MAX_RANGE_UJ - 262143000000 + 1_000_000) + 1_000_000) / 1e6
    assert second.joules_total == pytest.approx(joules)
    assert second.watts == pytest.approx(joules / 2.0)
    _write(powercap / "intel-rapl:0/energy_uj", 3_000_000)
    clock.now += 1.0
    third = meter.read()
    assert third.joules_total == pytest.approx(joules + 2.0)
    assert third.watts == pytest.approx(2.0)


def test_unreadable_rapl_says_it_is_root_only(tree, clock, no_vendor_modules):
    root = tree("rapl")
    counter = root / "class/powercap/intel-rapl:0/energy_uj"
    counter.unlink()
    counter.mkdir()  # reading it fails with an OSError, as a root-only file does for a user
    meter = open_power_meter(_config(root, vcgencmd=NO_VCGENCMD, fallback="none"), clock)
    assert isinstance(meter, NoPowerMeter)
    assert "rapl: cannot read" in meter.reason and "root-only since Linux 5.10" in meter.reason


# -- jtop ---------------------------------------------------------------------------------------
def test_jtop_is_tried_first_and_integrated(monkeypatch, tree, clock):
    jtop = _fake(monkeypatch, "jtop")
    monkeypatch.setattr(jtop, "POWER_MW", [4000.0, 4000.0, 6000.0])
    monkeypatch.setattr(jtop, "READS", 0)
    meter = open_power_meter(_config(tree("tx2")), clock)  # INA3221 is there too
    assert meter.name == "jtop" and meter.reason == ""
    assert meter.read().watts == pytest.approx(4.0)  # the second power read (open probes once)
    clock.now += 1.0
    reading = meter.read()
    assert reading.watts == pytest.approx(6.0) and reading.joules_total == pytest.approx(5.0)
    meter.close()
    meter.close()


def test_jtop_3x_power_tuple(monkeypatch, clock):
    jtop = _fake(monkeypatch, "jtop")
    monkeypatch.setattr(jtop, "API", 3)
    monkeypatch.setattr(jtop, "POWER_MW", [7250.0])
    meter = open_power_meter(_config(DATA / "empty", type="jtop"), clock)
    assert meter.name == "jtop" and meter.read().watts == pytest.approx(7.25)


def test_jtop_without_its_service_falls_back(monkeypatch, tree, clock):
    jtop = _fake(monkeypatch, "jtop")
    monkeypatch.setattr(jtop, "SERVICE_RUNNING", False)
    meter = open_power_meter(_config(tree("orin_nx")), clock)
    assert meter.name == "ina3221"
    assert "jtop: cannot connect to the jtop service" in meter.reason


# -- NVML ---------------------------------------------------------------------------------------
def test_nvml_uses_the_energy_counter_and_power_reading(monkeypatch, tree, clock):
    monkeypatch.setitem(sys.modules, "jtop", None)
    nvml = _fake(monkeypatch, "pynvml")
    monkeypatch.setattr(nvml, "ENERGY_MJ", [5_000_000, 5_000_000, 5_150_000])
    monkeypatch.setattr(nvml, "POWER_MW", [70_000, 71_000, 75_500])
    monkeypatch.setattr(nvml, "_calls", {"energy": 0, "power": 0})
    meter = open_power_meter(_config(tree("rapl")), clock)  # nvml before rapl
    assert meter.name == "nvml"
    first = meter.read()
    assert first.watts == pytest.approx(71.0) and first.joules_total == 0.0
    clock.now += 2.0
    second = meter.read()
    assert second.watts == pytest.approx(75.5) and second.joules_total == pytest.approx(150.0)
    meter.close()
    assert nvml.SHUTDOWNS >= 1


def test_nvml_without_a_driver_or_energy_counter(monkeypatch, tree, clock):
    monkeypatch.setitem(sys.modules, "jtop", None)
    nvml = _fake(monkeypatch, "pynvml")
    monkeypatch.setattr(nvml, "DRIVER_LOADED", False)
    meter = open_power_meter(_config(tree("empty"), type="nvml"), clock)
    assert isinstance(meter, NoPowerMeter) and "nvmlInit failed: Driver Not Loaded" in meter.reason
    monkeypatch.setattr(nvml, "DRIVER_LOADED", True)
    monkeypatch.setattr(nvml, "ENERGY_SUPPORTED", False)
    meter = open_power_meter(_config(tree("rapl")), clock)
    assert meter.name == "rapl" and "nvml: GPU 0: Not Supported" in meter.reason


# -- choosing -----------------------------------------------------------------------------------
def test_nothing_readable_gives_none_with_every_reason(no_vendor_modules, clock):
    config = _config(DATA / "empty", vcgencmd=NO_VCGENCMD, fallback="none")
    meter = open_power_meter(config, clock)
    assert isinstance(meter, NoPowerMeter)
    assert meter.reason.startswith("no power meter readable: jtop: not installed")
    for kind in ("ina3221:", "ina2xx:", "pmic:", "nvml:", "rapl:"):
        assert kind in meter.reason
    assert open_power_meter(PowerConfig(type="none")).reason == "power.type = 'none'"


def test_nothing_readable_falls_back_to_a_labelled_cpu_time_estimate(no_vendor_modules, clock):
    meter = open_power_meter(_config(DATA / "empty", vcgencmd=NO_VCGENCMD), clock)
    assert isinstance(meter, CpuEstimateMeter)
    assert meter.method == "estimated" and meter.watts_per_core == 4.0
    assert meter.reason.startswith(
        "no power meter readable, so estimated from CPU time at 4 W per busy core: jtop:"
    )
    for kind in ("ina3221:", "ina2xx:", "pmic:", "nvml:", "rapl:"):
        assert kind in meter.reason
    measured = open_power_meter(_config(DATA / "orin_nx"), clock)
    assert measured.method == "measured"


def test_auto_on_this_machine_gives_a_meter_or_a_reason():
    meter = open_power_meter(PowerConfig())
    try:
        reading = meter.read()
        if meter.name == "none":
            assert meter.reason and reading.watts is None
        else:
            assert reading.joules_total == 0.0
    finally:
        meter.close()


def test_config_problems_name_their_keys():
    with pytest.raises(ConfigProblems) as err:
        PowerConfig.from_dict({"type": "battery", "interval_s": 0, "nvml_device": -1, "x": 1})
    text = str(err.value)
    assert "power.type: 'battery' is not one of" in text and "power.x: unknown key" in text
    with pytest.raises(ConfigProblems) as err:
        PowerConfig.from_dict({"interval_s": 0, "nvml_device": -1})
    assert "power.interval_s: want 0.01..60 s" in str(err.value)
    assert "power.nvml_device: want a GPU index" in str(err.value)
    config = PowerConfig.from_dict({"type": "ina3221", "rails": ["VDD_IN"]})
    assert config.rails == ("VDD_IN",)


# -- Raspberry Pi 5 PMIC (vcgencmd pmic_read_adc) ------------------------------------------------
def test_pmic_output_pairs_each_rails_volts_and_amps():
    rails = parse_pmic_adc(PI5_PMIC_OUTPUT.read_text())
    assert len(rails) == 12 and "EXT5V" not in rails and "BATT" not in rails
    assert rails["VDD_CORE"] == pytest.approx(2.5 * 0.85)
    assert rails["3V3_SYS"] == pytest.approx(0.06440400 * 3.30590000)
    assert sum(rails.values()) == pytest.approx(PI5_PMIC_WATTS)
    assert parse_pmic_adc('error=2 error_msg="Command not registered"\n') == {}


@pytest.fixture
def fake_vcgencmd(monkeypatch):
    monkeypatch.setenv("FAKE_VCGENCMD_OUTPUT", str(PI5_PMIC_OUTPUT))
    return str(FAKES / "vcgencmd")


def test_pi5_pmic_through_the_vcgencmd_command(fake_vcgencmd, clock, no_vendor_modules):
    meter = open_power_meter(_config(DATA / "empty", vcgencmd=fake_vcgencmd), clock)
    assert meter.name == "pmic" and meter.method == "measured"
    assert "ina2xx: no " in meter.reason  # auto tried the others first
    first = meter.read()
    assert first.watts == pytest.approx(PI5_PMIC_WATTS) and first.joules_total == 0.0
    clock.now += 2.0
    assert meter.read().joules_total == pytest.approx(2.0 * PI5_PMIC_WATTS)


def test_pmic_that_cannot_be_read_says_why(monkeypatch, fake_vcgencmd, clock):
    config = PowerConfig(type="pmic", vcgencmd=NO_VCGENCMD)
    assert "no '/nonexistent/vcgencmd' command" in open_power_meter(config, clock).reason
    monkeypatch.delenv("FAKE_VCGENCMD_OUTPUT")  # a Pi 4's firmware: no such command
    meter = open_power_meter(PowerConfig(type="pmic", vcgencmd=fake_vcgencmd), clock)
    assert isinstance(meter, NoPowerMeter)
    assert "(exit 255): error=2" in meter.reason and "Raspberry Pi 5 only" in meter.reason


# -- INA219 / INA226 through hwmon --------------------------------------------------------------
def test_ina219_and_ina226_power1_input_microwatts_summed(tree, clock, no_vendor_modules):
    root = tree("rpi5_ina2xx")
    meter = open_power_meter(_config(root, vcgencmd=NO_VCGENCMD), clock)
    assert isinstance(meter, Ina2xxMeter) and meter.method == "measured"
    assert [p.parent.name for p in meter.files] == ["hwmon2", "hwmon3"]  # not cpu_thermal, rp1_adc
    assert meter.read().watts == pytest.approx(6.12 + 3.0025)
    _write(root / "class/hwmon/hwmon2/power1_input", 5000000)
    clock.now += 1.0
    reading = meter.read()
    assert reading.watts == pytest.approx(5.0 + 3.0025)
    assert reading.joules_total == pytest.approx((6.12 + 5.0) / 2 + 3.0025)


def test_ina2xx_chosen_monitor_and_an_unknown_one(tree, clock):
    root = tree("rpi5_ina2xx")
    only = open_power_meter(PowerConfig(type="ina2xx", sysfs_root=str(root), rails=("hwmon2",)))
    assert only.read().watts == pytest.approx(6.12)
    wrong = open_power_meter(PowerConfig(type="ina2xx", sysfs_root=str(root), rails=("hwmon9",)))
    assert isinstance(wrong, NoPowerMeter)
    assert "power.rails ['hwmon9'] not among the INA2xx ['hwmon2', 'hwmon3']" in wrong.reason


# -- the CPU-time estimate ----------------------------------------------------------------------
def test_cpu_estimate_is_watts_per_core_times_cpu_seconds(clock):
    cpu = [10.0]
    meter = CpuEstimateMeter(3.0, clock, cpu_seconds=lambda: cpu[0])
    assert meter.read() == PowerReading(None, 0.0)
    cpu[0], clock.now = 11.5, clock.now + 2.0  # 1.5 core-seconds in 2 s: 0.75 cores busy
    reading = meter.read()
    assert reading.joules_total == pytest.approx(4.5) and reading.watts == pytest.approx(2.25)
    cpu[0], clock.now = 11.0, clock.now + 1.0  # a child (the engine worker) ended: not negative
    assert meter.read().joules_total == pytest.approx(4.5)
    cpu[0], clock.now = 12.0, clock.now + 1.0
    assert meter.read().joules_total == pytest.approx(7.5)


def test_process_tree_cpu_time_includes_a_running_child():
    burn = (
        "import sys, time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.5: pass\n"
        "print('done', flush=True)\n"
        "sys.stdin.read()\n"
    )
    before = process_tree_cpu_seconds()
    child = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        own = sum(os.times()[:2])
        assert process_tree_cpu_seconds() - before >= 0.45
        assert process_tree_cpu_seconds() >= own + 0.45
    finally:
        child.communicate("")


def test_estimated_power_is_labelled_in_the_metrics_and_the_live_table(no_vendor_modules):
    from edge_daemon.config import DaemonConfig
    from edge_daemon.demo import DemoTable
    from edge_daemon.pipeline import Daemon

    config = DaemonConfig.from_dict(
        {
            "source": {"type": "synthetic", "pace": "fast", "duration_s": 0.3, "seed": 2},
            "bundle": str(Path(__file__).resolve().parents[1] / "models" / "default"),
            "engine": {"type": "onnxruntime", "threads": 1},
            "publisher": {"bind": "tcp://127.0.0.1:*"},
            "metrics": {"enabled": False},
            "power": {"sysfs_root": str(DATA / "empty"), "vcgencmd": NO_VCGENCMD,
                      "interval_s": 0.05, "cpu_watts_per_core": 2.5},
        },
        "",
    )  # fmt: skip
    daemon = Daemon(config)
    daemon.start()
    try:
        assert daemon.source_done.wait(120)
    finally:
        totals = daemon.stop()
    assert totals.classified > 0 and totals.energy_joules is not None
    get = daemon.registry.get_sample_value
    assert get("edgetc_energy_joules_total", {"method": "estimated"}) == pytest.approx(
        totals.energy_joules
    )
    assert get("edgetc_energy_joules_total", {"method": "measured"}) is None
    table = DemoTable(daemon)
    assert table.power_method() == "estimated"
    shown = table.joules_per_sample()
    assert shown.startswith("~") and "an estimate, CPU time x 2.5 W per busy core" in shown
