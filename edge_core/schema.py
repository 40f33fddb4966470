"""The task schema: the one source of truth for tasks, class names and latency budgets.

Class order follows the label vector of the papers' real dataset (tc_spectrum,
`helpers/pre_processing_wlan_utils.py`): index 0 of each task's classes is label value 0 there.
Train, engines and daemon import this module; a model bundle carries a copy (`as_dict`) that is
checked against it with `check_schema`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_core.errors import ModelError

INPUT_LENGTH = 3000
"""Complex samples per L1 packet after post-padding with zeros / post-truncation."""

SAMPLE_RATE_HZ = 20_000_000
"""Complex sample rate of the 20 MHz 802.11 channel the packets are cut from."""


@dataclass(frozen=True)
class Task:
    """One classification task of the multi-task model."""

    name: str
    task_id: int
    classes: tuple[str, ...]
    max_exec_ms: float

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def max_exec_s(self) -> float:
        return self.max_exec_ms / 1000.0

    def index(self, label: str) -> int:
        """Position of `label` in this task's classes; ValueError names the task if unknown."""
        try:
            return self.classes.index(label)
        except ValueError:
            raise ValueError(
                f"unknown {self.name} label {label!r}; expected one of {list(self.classes)}"
            ) from None


PHY = Task("phy", 0, ("802.11b", "802.11g", "802.11n"), 2.0)
FRAME = Task("frame", 1, ("mgmt", "ctrl", "data"), 2.0)
APP_TYPE = Task("app_type", 2, ("audio", "video", "none"), 7.0)
APP = Task("app", 3, ("spotify", "tunein", "gpodcast", "youtube", "netflix", "twitch", "none"), 7.0)

TASKS: tuple[Task, ...] = (PHY, FRAME, APP_TYPE, APP)
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)
TASK_BY_NAME: dict[str, Task] = {t.name: t for t in TASKS}

APP_TYPE_OF_APP: dict[str, str] = {
    "spotify": "audio",
    "tunein": "audio",
    "gpodcast": "audio",
    "youtube": "video",
    "netflix": "video",
    "twitch": "video",
    "none": "none",
}
"""Task 2 follows from task 3: every application has exactly one application type."""

REAL_LABEL_ORDER: tuple[str, ...] = ("frame", "phy", "app_type", "app")
"""Order of the tasks in the real dataset's uint8 label vector `Y` ([frame, phy, app_type, app])."""


def check_labels(phy: str, frame: str, app_type: str, app: str) -> None:
    """Raise ValueError unless the four labels form a packet the dataset can contain.

    The rules: each label is a known class; only data frames carry an application; the
    application type is the one its application implies.
    """
    for task, label in zip(TASKS, (phy, frame, app_type, app), strict=True):
        task.index(label)
    if frame != "data" and app != "none":
        raise ValueError(f"a {frame} frame cannot carry application {app!r}")
    expected = APP_TYPE_OF_APP[app]
    if app_type != expected:
        raise ValueError(f"application {app!r} implies app_type {expected!r}, not {app_type!r}")


def as_dict() -> dict[str, Any]:
    """The schema as plain JSON-ready data, the copy a model bundle carries."""
    return {
        "input_length": INPUT_LENGTH,
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "tasks": [
            {
                "name": t.name,
                "task_id": t.task_id,
                "classes": list(t.classes),
                "max_exec_ms": t.max_exec_ms,
            }
            for t in TASKS
        ],
    }


def check_schema(other: dict[str, Any], where: str = "bundle") -> None:
    """Raise ModelError naming the first mismatch between `other` and this schema."""
    mine = as_dict()
    if other.get("input_length") != mine["input_length"]:
        raise ModelError(
            f"{where}: input_length {other.get('input_length')!r} != {mine['input_length']}"
        )
    theirs = {t.get("name"): t for t in other.get("tasks", []) if isinstance(t, dict)}
    for task in mine["tasks"]:
        got = theirs.get(task["name"])
        if got is None:
            raise ModelError(f"{where}: task {task['name']!r} missing from its schema")
        if list(got.get("classes", [])) != task["classes"]:
            raise ModelError(
                f"{where}: task {task['name']!r} classes {got.get('classes')!r} "
                f"!= {task['classes']!r}"
            )
    extra = sorted(set(theirs) - set(TASK_NAMES), key=str)
    if extra:
        raise ModelError(f"{where}: unknown tasks {extra!r}")
