"""Which task the labels call for, decided before anything is trained (pure).

Retraining cannot build its first model before it knows whether the labels are classes or
numbers. ``TaskGate`` holds the first examples until their labels tell (``infer_task``), or
takes the task as set; from then on every example whose label the task cannot learn is
refused (LabelTaskMismatch, dead-lettered by the shell), so that a string among numbers
never reaches a regressor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from driftloop.shared.errors import ConfigError, LabelTaskMismatch
from driftloop.shared.modelspec import MULTICLASS, check_label, check_task, infer_task

T = TypeVar("T")


class TaskGate(Generic[T]):
    """Examples in, examples a model of the decided task can learn out, in arrival order.

    ``task``: the task if known from the start (a setting, a resumed champion), else None;
    ``examples``: how many labels may be held at most before integral labels decide (0 and
    1 alone: binary; a few values: classes); ``label`` reads an item's label (items are the
    shell's own: an example with the record it came in, say).
    """

    def __init__(
        self, task: str | None, *, examples: int = 100, max_classes: int = 20, label: Callable[[T], Any]
    ) -> None:
        if task is not None:
            check_task(task)
        if examples < 1 or max_classes < 2:
            raise ConfigError("task inference needs at least 1 example and 2 classes")
        self.examples = examples
        self.max_classes = max_classes
        self._label = label
        self._task = task
        self._held: list[T] = []

    @property
    def task(self) -> str | None:
        return self._task

    @property
    def held(self) -> int:
        return len(self._held)

    def offer(self, item: T) -> tuple[list[T], list[tuple[T, LabelTaskMismatch]]]:
        """(items to learn from now, in order; items refused, each with why). An item whose
        label fits no task at all (a NaN) is refused at once; held items that the decided
        task cannot learn come out refused when it is decided."""
        y = self._label(item)
        if self._task is not None:
            check_label(self._task, y)
            return [item], []
        check_label(MULTICLASS, y)  # the widest task: what fits none is refused at once
        self._held.append(item)
        task = infer_task(
            (self._label(i) for i in self._held), final=len(self._held) >= self.examples, max_classes=self.max_classes
        )
        if task is None:
            return [], []
        self._task = task
        held, self._held = self._held, []
        ready: list[T] = []
        refused: list[tuple[T, LabelTaskMismatch]] = []
        for i in held:
            try:
                check_label(task, self._label(i))
                ready.append(i)
            except LabelTaskMismatch as exc:
                refused.append((i, exc))
        return ready, refused
