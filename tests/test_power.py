"""Power meters on fake sysfs trees (tests/data/power, laid out and in units as the real ones),
a fake jtop and a fake pynvml (tests/fakes); a fake clock makes the energy sums exact."""

import importlib
import shutil
import sys
from pathlib import Path

import pytest

from edge_core.typed_config import ConfigProblems
from edge_daemon.power import (
    Ina3221Meter,
    NoPowerMeter,
    PowerConfig,
    RaplMeter,
    ina3221_rails,
    open_power_meter,
    rapl_zones,
)

DATA = Path(__file__).parent / "data" / "power"
FAKES = Path(__file__).parent / "fakes"
MAX_RANGE_UJ = 262143328850


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
    meter = open_power_meter(_config(root), clock)
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
    meter = open_power_meter(_config(DATA / "empty"), clock)
    assert isinstance(meter, NoPowerMeter)
    assert meter.reason.startswith("no power meter readable: jtop: not installed")
    for kind in ("ina3221:", "nvml:", "rapl:"):
        assert kind in meter.reason
    assert open_power_meter(PowerConfig(type="none")).reason == "power.type = 'none'"


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
