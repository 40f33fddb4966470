"""A stand-in for jetson-stats 4.x's `jtop` package, for tests (the real one needs a Jetson).

Same surface as the real client (rbonghi/jetson_stats jtop/jtop.py): `jtop(interval=...)`,
`start()` (raises JtopException when the jtop service is not running), `ok()`, `close()`, the
context manager, and `power`: `{"rail": {NAME: {...}}, "tot": {...}}` with `volt` mV, `curr` mA,
`power` and `avg` mW; `tot` is the VDD_IN rail with its `name`.

Tests script it: `POWER_MW` is the total each `power` read reports (one value per read, the
last repeating); `SERVICE_RUNNING = False` makes `start()` fail as the real one does; `API = 3`
returns jetson-stats 3.x's `(total, rails)` tuple with `total["cur"]` mW.
"""

from __future__ import annotations

from types import TracebackType

POWER_MW: list[float] = [5000.0]
SERVICE_RUNNING = True
API = 4  # 3: jetson-stats 3.x, whose `power` is a tuple (total {"cur", "avg"}, rails)
READS = 0


class JtopException(Exception):
    """What the real client raises when it cannot talk to the service."""


class jtop:
    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._started = False

    def start(self) -> None:
        if not SERVICE_RUNNING:
            raise JtopException(
                "The jtop.service is not active. Please run:\nsudo systemctl restart jtop.service"
            )
        self._started = True

    def ok(self, spin: bool = False) -> bool:
        return self._started

    @property
    def power(self) -> dict | tuple:
        global READS
        total = POWER_MW[min(READS, len(POWER_MW) - 1)]
        READS += 1
        volt = 5072
        tot = {"online": True, "type": "INA3221", "status": "ok", "volt": volt,
               "curr": int(total * 1000 / volt), "power": int(total), "avg": int(total),
               "warn": 32760, "crit": 32760, "name": "VDD_IN"}  # fmt: skip
        rail = {k: v for k, v in tot.items() if k != "name"}
        if API == 3:
            return {"cur": int(total), "avg": int(total)}, {"VDD_IN": {"cur": int(total)}}
        return {"rail": {"VDD_IN": rail}, "tot": tot}

    def close(self) -> None:
        self._started = False

    def __enter__(self) -> jtop:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
