"""Figures a test measured (chaos runs, delays), shown at the end of the run.

pytest hides a passing test's output; these lines are what an issue's "print
the figure" asks for, so they go into the terminal summary instead.
"""

from __future__ import annotations

FIGURES: list[str] = []


def report(line: str) -> None:
    FIGURES.append(line)
    print(line)
