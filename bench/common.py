"""The shared shape of a benchmark figure and how it is printed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure: `<name>: <value> (target <target>) PASS|MISS`."""

    name: str
    value: str
    target: str
    ok: bool | None  # None: reported for information, no target

    def line(self) -> str:
        """The line `make bench` prints for this figure."""
        if self.ok is None:
            return f"{self.name}: {self.value}"
        return f"{self.name}: {self.value} (target {self.target}) {'PASS' if self.ok else 'MISS'}"
