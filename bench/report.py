"""Results and how they are shown: a Markdown table on stdout, optionally a JSON file."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.env import Settings
from bench.timing import Measurement

HEADER = "| benchmark | dal ops/s | raw ops/s | ratio | target | met? |"
SEPARATOR = "|---|---:|---:|---:|---:|:---:|"
#: the most decimals a ratio is printed with (``shown_ratio``)
MAX_DIGITS = 6


@dataclass(frozen=True)
class Result:
    """One benchmark's outcome: dal's rate as a ratio to the raw client's, against a target ratio."""

    name: str
    measurement: Measurement
    target: float
    #: facts the benchmark checked or wants the reader to know (cache hits, commits per save, ...)
    notes: dict[str, Any] = field(default_factory=dict)
    #: a line printed under the table, after a blank line, for what the row's columns cannot hold
    footnote: str = ""

    @property
    def met(self) -> bool:
        return self.measurement.ratio >= self.target

    def row(self) -> str:
        m = self.measurement
        ratio = shown_ratio(m.ratio, self.target)
        return (f"| {self.name} | {m.dal_rate:,.0f} | {m.raw_rate:,.0f} | {ratio}x "
                f"| >= {self.target:.2f}x | {'yes' if self.met else 'no'} |")

    def to_json(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "name": self.name,
            "dal_ops_per_s": m.dal_rate,
            "raw_ops_per_s": m.raw_rate,
            "ratio": m.ratio,
            "target": self.target,
            "met": self.met,
            "ops_per_round": m.ops_per_round,
            "dal_rates": list(m.dal_rates),
            "raw_rates": list(m.raw_rates),
            "round_ratios": list(m.round_ratios),
            "notes": self.notes,
            "footnote": self.footnote,
        }


def shown_ratio(ratio: float, target: float) -> str:
    """Return ``ratio`` with 2 decimals, or as many more (up to 6) as it takes to differ from ``target``
    shown alike: ``met`` compares the exact ratio, so 0.7996 against 0.80 prints ``0.7996``, not a
    ``0.80`` that reads as met beside its "no"."""
    digits = 2
    while digits < MAX_DIGITS and ratio != target and f"{ratio:.{digits}f}" == f"{target:.{digits}f}":
        digits += 1
    return f"{ratio:.{digits}f}"


def table(results: Sequence[Result]) -> str:
    """Return the Markdown table of ``results``, then their footnotes (if any) after a blank line."""
    lines = [HEADER, SEPARATOR, *(result.row() for result in results)]
    footnotes = [f"- {result.footnote}" for result in results if result.footnote]
    return "\n".join([*lines, "", *footnotes] if footnotes else lines)


def write_json(path: Path, results: Sequence[Result], settings: Settings) -> None:
    """Write every result, with its per-round rates, and the settings of the run to ``path``."""
    document = {
        "settings": {"quick": settings.quick, "rounds": settings.rounds},
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "results": [result.to_json() for result in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
