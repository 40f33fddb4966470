"""Power meters: how many watts the box draws and how many joules it has used since start.

One `[power]` config section, `type` one of:

* `jtop`: jetson-stats (`from jtop import jtop`), `jetson.power["tot"]["power"]` in mW (the
  VDD_IN / POM_5V_IN rail, or the sum of the rails where there is none; 4.x and later; 3.x
  returns `(total, rails)` with `total["cur"]` mW). Needs the jtop service.
* `ina3221`: the Jetson's INA3221 monitors in sysfs. JetPack 4 (TX2, Nano) iio driver
  `ina3221x`: `bus/i2c/drivers/ina3221x/*/iio:device*/in_powerN_input` (mW) named by
  `rail_name_N`. JetPack 5/6 (Orin) hwmon driver `ina3221`: `class/hwmon/hwmon*/` whose `name`
  is "ina3221", `inN_label`, `inN_input` (mV) and `currN_input` (mA) for N = 1..3 ("NC" labels
  are unconnected).
* `rapl`: Linux powercap `class/powercap/intel-rapl:N/energy_uj`, a µJ counter that wraps at
  `max_energy_range_uj` (root-only to read since Linux 5.10).
* `nvml`: NVIDIA's management library (`pynvml`, from nvidia-ml-py):
  `nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver loaded; Volta and newer) and
  `nvmlDeviceGetPowerUsage` (mW). The GPU board only, not the host.
* `ina2xx`: INA219 / INA226 power monitors through Linux hwmon (an INA219 HAT or breakout on
  a Raspberry Pi's 5 V input): `class/hwmon/hwmon*/` whose `name` is "ina219" or "ina226",
  `power1_input` in µW; every such monitor is added up (or those whose hwmon folder `rails`
  names, "hwmon2").
* `pmic`: the Raspberry Pi 5's power-management IC, `vcgencmd pmic_read_adc` (the `vcgencmd`
  key is the command): lines `   VDD_CORE_A current(7)=2.50000000A` and
  `   VDD_CORE_V volt(15)=0.85000000V`; volts x amps of each rail with both, summed. These are
  the PMIC's own rails (SoC core, RAM, 1.8/3.3 V IO...), not the 5 V input: what USB devices
  (a Coral USB Accelerator) and the conversion losses draw is not in it.
* `cpu_estimate`: no meter, an estimate: `cpu_watts_per_core` x the CPU time of the daemon's
  process and its children (the engine worker), as CodeCarbon's and Kepler's CPU models
  attribute power by CPU time. Idle and other processes' power are not in it.
* `none`: no meter; the daemon exports no power metrics.
* `auto` (default): the first of jtop, ina3221, ina2xx, pmic, nvml, rapl that can be read; when
  none can, `fallback` ("estimate": cpu_estimate, or "none"); the meter's `reason` says why each
  one before it was passed over, for one log line.

Every meter has a `method`: "measured" (a sensor) or "estimated" (cpu_estimate). The daemon
puts it on the power metrics as a label, and the live table says which, so an estimate is
never mistaken for a measurement.

Energy: a cumulative counter (rapl, nvml) is used directly; otherwise power is integrated over
the read times with the trapezoidal rule, E = sum((P[i-1] + P[i]) / 2 * dt[i]), the refinement
of Eq. 8 of paper 1 (E = sum(P[i] * dt[i])). So an integrating meter is only as good as its read
rate: the daemon reads it every `interval_s`.

`sysfs_root` (default "/sys") lets tests point the sysfs meters at a fake tree laid out like the
real one (tests/data/power/).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from edge_core.typed_config import TypedConfig

Clock = Callable[[], float]
POWER_TYPES = ("jtop", "ina3221", "ina2xx", "pmic", "nvml", "rapl")
"""The meters `auto` tries, in this order (whole-board sensors before the CPU-only RAPL)."""
INA2XX_NAMES = ("ina219", "ina226")
"""hwmon `name`s of the INA2xx monitors the `ina2xx` meter reads (Linux drivers/hwmon/ina2xx.c)."""
PMIC_TIMEOUT_S = 5.0
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
"""Rails that measure the whole module's input (TX2/Orin NX/Nano; Nano/Xavier)."""


@dataclass(frozen=True)
class PowerConfig(TypedConfig):
    """`[power]` table.

    type: "auto", "jtop", "ina3221", "ina2xx", "pmic", "rapl", "nvml", "cpu_estimate" or
    "none". sysfs_root: where sysfs is mounted (tests use a fake tree). interval_s: how often the
    daemon reads the meter. rails: INA3221 rails to add up (empty: the module input rail VDD_IN
    / POM_5V_IN when there is one, else every connected rail), or ina2xx hwmon folders.
    nvml_device: GPU index for nvml. vcgencmd: the command `pmic` runs. fallback: what `auto`
    gives when no meter is readable. cpu_watts_per_core: W of one core busy 100 % for
    cpu_estimate (4 W: a round figure between a Raspberry Pi 5's Cortex-A76 core, ~1.5-2 W, and
    a desktop x86 core at half its share of a 65 W TDP, CodeCarbon's constant mode; set your
    device's).
    """

    section: ClassVar[str] = "power"
    type: Literal[
        "auto", "jtop", "ina3221", "ina2xx", "pmic", "rapl", "nvml", "cpu_estimate", "none"
    ] = "auto"
    sysfs_root: str = "/sys"
    interval_s: float = 1.0
    rails: tuple[str, ...] = ()
    nvml_device: int = 0
    vcgencmd: str = "vcgencmd"
    fallback: Literal["estimate", "none"] = "estimate"
    cpu_watts_per_core: float = 4.0

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not 0.01 <= self.interval_s <= 60:
            out.append(("interval_s", f"want 0.01..60 s, got {self.interval_s}"))
        if self.nvml_device < 0:
            out.append(("nvml_device", f"want a GPU index >= 0, got {self.nvml_device}"))
        if not 0 < self.cpu_watts_per_core <= 500:
            out.append(("cpu_watts_per_core", f"want 0..500 W, got {self.cpu_watts_per_core}"))
        if not self.vcgencmd:
            out.append(("vcgencmd", "want a command (vcgencmd or its path)"))
        return out


@dataclass(frozen=True)
class PowerReading:
    """One reading: watts now (None: not known yet) and joules since the meter opened."""

    watts: float | None
    joules_total: float | None


class PowerUnavailable(Exception):
    """This meter cannot be read here; the message says why (for `auto`'s log line)."""


class PowerMeter(ABC):
    """A source of power readings. `read` is called from one thread."""

    name: str = ""
    method: Literal["measured", "estimated"] = "measured"
    """How the figures come: from a sensor, or estimated (the metrics' `method` label)."""
    reason: str = ""
    """Why this meter was chosen over others (auto) or why there is none; '' when configured."""

    @abstractmethod
    def read(self) -> PowerReading:
        """Read the meter now."""

    def close(self) -> None:  # noqa: B027 - most meters hold nothing
        """Release what the meter holds (a jtop connection, NVML); idempotent."""


class NoPowerMeter(PowerMeter):
    """`none`: readings are all None."""

    name = "none"

    def __init__(self, reason: str = "power.type = 'none'") -> None:
        self.reason = reason

    def read(self) -> PowerReading:
        return PowerReading(None, None)


class IntegratingMeter(PowerMeter):
    """A meter of instantaneous power; energy is the trapezoidal integral over read times."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last: tuple[float, float] | None = None  # (time, watts)
        self._joules = 0.0

    @abstractmethod
    def watts(self) -> float:
        """Power drawn now, W; PowerUnavailable if the sensor stopped answering."""

    def read(self) -> PowerReading:
        p, t = self.watts(), self._clock()
        if self._last is not None:
            t0, p0 = self._last
            self._joules += (p0 + p) / 2 * max(0.0, t - t0)
        self._last = (t, p)
        return PowerReading(p, self._joules)


class CounterMeter(PowerMeter):
    """A meter with a cumulative energy counter; watts are the counter's rate between reads."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last: tuple[float, float] | None = None  # (time, counter in J)
        self._joules = 0.0

    @abstractmethod
    def counter_joules(self) -> float:
        """The counter now, J, never decreasing (a wrapping counter is unwrapped first)."""

    def watts_now(self, rate: float | None) -> float | None:
        """Power to report; the counter's rate unless the device measures power itself."""
        return rate

    def read(self) -> PowerReading:
        e, t = self.counter_joules(), self._clock()
        rate = None
        if self._last is not None:
            t0, e0 = self._last
            delta = max(0.0, e - e0)  # a counter reset (NVML: driver reload) adds nothing
            self._joules += delta
            rate = delta / (t - t0) if t > t0 else None
        self._last = (t, e)
        return PowerReading(self.watts_now(rate), self._joules)


# -- jtop ---------------------------------------------------------------------------------------
class JtopMeter(IntegratingMeter):
    """jetson-stats: `jtop().power["tot"]["power"]` mW."""

    name = "jtop"

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        try:
            from jtop import jtop
        except ImportError as exc:
            raise PowerUnavailable(f"not installed ({exc}; pip install jetson-stats)") from exc
        self._jetson: Any = jtop()
        try:
            self._jetson.start()
        except Exception as exc:  # JtopException: no jtop.service, not in the jtop group
            raise PowerUnavailable(f"cannot connect to the jtop service: {exc}") from exc
        try:
            self._jetson.ok()  # waits for the service's first statistics
            self.watts()
        except PowerUnavailable:
            self.close()
            raise

    def watts(self) -> float:
        power = self._jetson.power
        try:
            if isinstance(power, tuple):  # jetson-stats 3.x: (total {"cur", "avg"} mW, rails)
                return float(power[0]["cur"]) / 1000.0
            return float(power["tot"]["power"]) / 1000.0
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise PowerUnavailable(f"jtop reports no total power ({power!r})") from exc

    def close(self) -> None:
        jetson, self._jetson = self._jetson, None
        if jetson is not None:
            jetson.close()


# -- INA3221 sysfs ------------------------------------------------------------------------------
def _read_number(path: Path) -> float:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise PowerUnavailable(f"cannot read {path}: {exc}") from exc


def _text(path: Path) -> str:
    """A sysfs attribute's text, stripped; '' if it is missing or unreadable."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel: its label and how to read its power in W."""

    name: str
    files: tuple[Path, ...]  # (power mW) for iio, (voltage mV, current mA) for hwmon

    def watts(self) -> float:
        if len(self.files) == 1:
            return _read_number(self.files[0]) / 1e3  # mW
        return _read_number(self.files[0]) * _read_number(self.files[1]) / 1e6  # mV * mA


def ina3221_rails(root: Path) -> list[Rail]:
    """Every connected INA3221 rail under sysfs `root` (iio on JetPack 4, hwmon on 5/6)."""
    rails: list[Rail] = []
    for device in sorted(root.glob("bus/i2c/drivers/ina3221x/*/iio:device*")):
        for power in sorted(device.glob("in_power[0-9]_input")):
            index = power.name[len("in_power")]
            name = _text(device / f"rail_name_{index}") or f"{device.name}:{index}"
            rails.append(Rail(name, (power,)))
    for hwmon in sorted(root.glob("class/hwmon/hwmon*")):
        if _text(hwmon / "name") != "ina3221":
            continue
        for channel in (1, 2, 3):  # in4..in6 are shunt voltages, in7 their sum: not rails
            volts, amps = hwmon / f"in{channel}_input", hwmon / f"curr{channel}_input"
            label = _text(hwmon / f"in{channel}_label")
            if not volts.exists() or not amps.exists() or label in ("", "NC"):
                continue
            rails.append(Rail(label, (volts, amps)))
    return rails


class Ina3221Meter(IntegratingMeter):
    """Sum of INA3221 rails: the module input rail if there is one, else all (or `rails`)."""

    name = "ina3221"

    def __init__(self, root: Path, wanted: tuple[str, ...], clock: Clock) -> None:
        super().__init__(clock)
        found = ina3221_rails(root)
        if not found:
            raise PowerUnavailable(
                f"no {root}/bus/i2c/drivers/ina3221x/*/iio:device*/in_powerN_input and no "
                f"{root}/class/hwmon/hwmon*/name = ina3221"
            )
        names = [r.name for r in found]
        if wanted:
            missing = [w for w in wanted if w not in names]
            if missing:
                raise PowerUnavailable(f"power.rails {missing} not among the rails {names}")
            self.rails = [r for r in found if r.name in wanted]
        else:
            inputs = [r for r in found if r.name in INPUT_RAILS]
            self.rails = inputs[:1] or found
        self.watts()  # readable now, or PowerUnavailable

    def watts(self) -> float:
        return sum(rail.watts() for rail in self.rails)


# -- RAPL powercap ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RaplZone:
    """A top-level powercap zone (a CPU package, or psys) and its counter range."""

    name: str
    energy: Path
    max_range_uj: float


def rapl_zones(root: Path) -> list[RaplZone]:
    """Top-level `intel-rapl:N` zones under sysfs `root` (subzones `intel-rapl:N:M` are parts
    of their package and not counted again); packages if there are any, else every zone."""
    zones = []
    for zone in sorted(root.glob("class/powercap/intel-rapl:*")):
        if not re.fullmatch(r"intel-rapl:\d+", zone.name) or not (zone / "energy_uj").exists():
            continue
        name = _text(zone / "name") or zone.name
        max_range = _read_number(zone / "max_energy_range_uj")
        zones.append(RaplZone(name, zone / "energy_uj", max_range))
    packages = [z for z in zones if z.name.startswith("package")]
    return packages or zones


class RaplMeter(CounterMeter):
    """Sum of the RAPL package counters, µJ, wrapping at `max_energy_range_uj` each."""

    name = "rapl"

    def __init__(self, root: Path, clock: Clock) -> None:
        super().__init__(clock)
        self.zones = rapl_zones(root)
        if not self.zones:
            raise PowerUnavailable(f"no {root}/class/powercap/intel-rapl:N/energy_uj")
        try:
            self._values = self._read_all()
        except PowerUnavailable as exc:
            raise PowerUnavailable(f"{exc} (energy_uj is root-only since Linux 5.10)") from exc
        self._unwrapped_uj = 0.0

    def _read_all(self) -> list[float]:
        return [_read_number(zone.energy) for zone in self.zones]

    def counter_joules(self) -> float:
        # Each zone wraps on its own: unwrap them one by one, then add up.
        values = self._read_all()
        for zone, before, now in zip(self.zones, self._values, values, strict=True):
            delta = now - before
            if delta < 0:  # wrapped once (reads a whole range apart would wrap unseen)
                delta += zone.max_range_uj
            self._unwrapped_uj += delta
        self._values = values
        return self._unwrapped_uj / 1e6


# -- NVML ---------------------------------------------------------------------------------------
class NvmlMeter(CounterMeter):
    """An NVIDIA GPU's total energy counter (mJ) and power reading (mW) through pynvml."""

    name = "nvml"

    def __init__(self, index: int, clock: Clock) -> None:
        super().__init__(clock)
        try:
            import pynvml
        except ImportError as exc:
            raise PowerUnavailable(f"not installed ({exc}; pip install nvidia-ml-py)") from exc
        self._nvml: Any = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise PowerUnavailable(f"nvmlInit failed: {exc}") from exc
        try:
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            pynvml.nvmlDeviceGetPowerUsage(self._handle)
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            self._nvml = None
            raise PowerUnavailable(f"GPU {index}: {exc}") from exc

    def counter_joules(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)) / 1e3

    def watts_now(self, rate: float | None) -> float | None:
        return float(self._nvml.nvmlDeviceGetPowerUsage(self._handle)) / 1e3

    def close(self) -> None:
        nvml, self._nvml = self._nvml, None
        if nvml is not None:
            nvml.nvmlShutdown()


# -- INA219 / INA226 hwmon ----------------------------------------------------------------------
def ina2xx_monitors(root: Path) -> list[Path]:
    """`power1_input` (µW) of every INA219/INA226 hwmon device under sysfs `root`."""
    return [
        hwmon / "power1_input"
        for hwmon in sorted(root.glob("class/hwmon/hwmon*"))
        if _text(hwmon / "name") in INA2XX_NAMES and (hwmon / "power1_input").exists()
    ]


class Ina2xxMeter(IntegratingMeter):
    """Sum of INA219/INA226 monitors' `power1_input` (µW), or of the hwmon folders `wanted`."""

    name = "ina2xx"

    def __init__(self, root: Path, wanted: tuple[str, ...], clock: Clock) -> None:
        super().__init__(clock)
        found = ina2xx_monitors(root)
        if not found:
            raise PowerUnavailable(
                f"no {root}/class/hwmon/hwmon*/ with name {' or '.join(INA2XX_NAMES)} "
                "and power1_input"
            )
        if wanted:
            names = [p.parent.name for p in found]
            missing = [w for w in wanted if w not in names]
            if missing:
                raise PowerUnavailable(f"power.rails {missing} not among the INA2xx {names}")
            found = [p for p in found if p.parent.name in wanted]
        self.files = found
        self.watts()

    def watts(self) -> float:
        return sum(_read_number(path) for path in self.files) / 1e6  # µW


# -- Raspberry Pi 5 PMIC ------------------------------------------------------------------------
_PMIC_LINE = re.compile(
    r"^\s*(?P<rail>\S+)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)=(?P<value>[-+0-9.eE]+)[AV]\s*$"
)


def parse_pmic_adc(text: str) -> dict[str, float]:
    """`vcgencmd pmic_read_adc` output -> rail -> watts (volts x amps of each rail that has
    both a current and a voltage line; EXT5V_V and BATT_V have no current and are left out)."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        found = _PMIC_LINE.match(line)
        if found:
            table = amps if found["kind"] == "A" else volts
            table[found["rail"]] = float(found["value"])
    return {rail: volts[rail] * amps[rail] for rail in amps if rail in volts}


class PmicMeter(IntegratingMeter):
    """Raspberry Pi 5: the PMIC's rails from `vcgencmd pmic_read_adc`, volts x amps, summed."""

    name = "pmic"

    def __init__(self, command: str, clock: Clock) -> None:
        super().__init__(clock)
        found = shutil.which(command)
        if found is None:
            raise PowerUnavailable(f"no {command!r} command (a Raspberry Pi's vcgencmd)")
        self._argv = [found, "pmic_read_adc"]
        self.rails = self.read_rails()

    def read_rails(self) -> dict[str, float]:
        try:
            done = subprocess.run(
                self._argv, capture_output=True, text=True, timeout=PMIC_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PowerUnavailable(f"{' '.join(self._argv)}: {exc}") from exc
        rails = parse_pmic_adc(done.stdout)
        if done.returncode != 0 or not rails:
            why = (done.stderr or done.stdout).strip().splitlines()[:1] or ["no rail readings"]
            raise PowerUnavailable(
                f"{' '.join(self._argv)} (exit {done.returncode}): {why[0]} "
                "(a Raspberry Pi 5 only; older Pis have no PMIC ADC)"
            )
        return rails

    def watts(self) -> float:
        self.rails = self.read_rails()
        return sum(self.rails.values())


# -- CPU-time estimate --------------------------------------------------------------------------
def process_tree_cpu_seconds(pid: int | None = None, proc: str = "/proc") -> float:
    """User + system CPU seconds of a process (default: this one) and its live descendants
    (the engine worker process), from `/proc/<pid>/stat`; os.times() where /proc is missing."""
    pid = os.getpid() if pid is None else pid
    hz = os.sysconf("SC_CLK_TCK")
    try:
        with open(f"{proc}/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        if pid != os.getpid():
            return 0.0  # it ended meanwhile
        t = os.times()
        return t.user + t.system
    seconds = (int(fields[11]) + int(fields[12])) / hz
    for children in Path(f"{proc}/{pid}/task").glob("*/children"):
        try:
            kids = children.read_text().split()
        except OSError:
            continue
        seconds += sum(process_tree_cpu_seconds(int(kid), proc) for kid in kids)
    return seconds


class CpuEstimateMeter(CounterMeter):
    """An estimate, not a measurement: energy = watts_per_core x CPU seconds of the daemon's
    process tree; power = its rate between reads. Children that ended take their time along
    (a restarted engine worker's is not counted again, nor lost: the counter never falls)."""

    name = "cpu_estimate"
    method = "estimated"

    def __init__(
        self,
        watts_per_core: float,
        clock: Clock,
        cpu_seconds: Callable[[], float] = process_tree_cpu_seconds,
    ) -> None:
        super().__init__(clock)
        self.watts_per_core = watts_per_core
        self._cpu_seconds = cpu_seconds
        self._seen = cpu_seconds()
        self._total = 0.0

    def counter_joules(self) -> float:
        now = self._cpu_seconds()
        self._total += max(0.0, now - self._seen)  # a child that ended takes its time along
        self._seen = now
        return self._total * self.watts_per_core


# -- choosing one -------------------------------------------------------------------------------
def _open(kind: str, config: PowerConfig, clock: Clock) -> PowerMeter:
    root = Path(config.sysfs_root)
    if kind == "jtop":
        return JtopMeter(clock)
    if kind == "ina3221":
        return Ina3221Meter(root, config.rails, clock)
    if kind == "ina2xx":
        return Ina2xxMeter(root, config.rails, clock)
    if kind == "pmic":
        return PmicMeter(config.vcgencmd, clock)
    if kind == "cpu_estimate":
        return CpuEstimateMeter(config.cpu_watts_per_core, clock)
    if kind == "nvml":
        return NvmlMeter(config.nvml_device, clock)
    if kind == "rapl":
        return RaplMeter(root, clock)
    raise ValueError(f"unknown power meter {kind!r}")


def open_power_meter(config: PowerConfig, clock: Clock = time.monotonic) -> PowerMeter:
    """The meter `config` asks for; `none` (with `reason` saying why) when it cannot be read.

    `auto` tries jtop, ina3221, ina2xx, pmic, nvml and rapl in turn, then `fallback` (the CPU
    time estimate, or none). A configured meter that cannot be read gives `none`, so a missing
    sensor never stops the classifier; its reason says so.
    """
    if config.type == "none":
        return NoPowerMeter()
    kinds = POWER_TYPES if config.type == "auto" else (config.type,)
    passed: list[str] = []
    for kind in kinds:
        try:
            meter = _open(kind, config, clock)
        except PowerUnavailable as exc:
            passed.append(f"{kind}: {exc}")
            continue
        meter.reason = "; ".join(passed)
        return meter
    if config.type == "auto":
        if config.fallback == "estimate":
            meter = CpuEstimateMeter(config.cpu_watts_per_core, clock)
            meter.reason = (
                f"no power meter readable, so estimated from CPU time at "
                f"{config.cpu_watts_per_core:g} W per busy core: " + "; ".join(passed)
            )
            return meter
        return NoPowerMeter("no power meter readable: " + "; ".join(passed))
    return NoPowerMeter(f"power.type = {config.type!r} cannot be read: " + "; ".join(passed))


__all__ = [
    "INA2XX_NAMES",
    "INPUT_RAILS",
    "POWER_TYPES",
    "CounterMeter",
    "CpuEstimateMeter",
    "Ina2xxMeter",
    "Ina3221Meter",
    "IntegratingMeter",
    "JtopMeter",
    "NoPowerMeter",
    "NvmlMeter",
    "PmicMeter",
    "PowerConfig",
    "PowerMeter",
    "PowerReading",
    "PowerUnavailable",
    "Rail",
    "RaplMeter",
    "RaplZone",
    "ina2xx_monitors",
    "ina3221_rails",
    "open_power_meter",
    "parse_pmic_adc",
    "process_tree_cpu_seconds",
    "rapl_zones",
]
