"""The package's code and ``--help`` say what a thing is and why; measurements, dates and issue history live in
``benchmarks/``, ``docs/`` and the git log, and every option's help stays short."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("gmnerf_ns",)

HISTORY_PATTERNS: Dict[str, re.Pattern] = {
    "issue reference": re.compile(r"\bissue #\d+|(?<![\w&])#\d{1,4}\b", re.IGNORECASE),
    "date": re.compile(r"\b20\d\d-\d\d-\d\d\b"),
    "session": re.compile(r"\bsessions?\b", re.IGNORECASE),
    "measured": re.compile(r"\bmeasured\b", re.IGNORECASE),
    "timing or PSNR figure": re.compile(r"\d+(\.\d+)? ?(ms|dB)\b|\b(ms|s)/step\b"),
    "speed-up figure": re.compile(r"\d+(\.\d+)? ?(x|%) (faster|slower)\b", re.IGNORECASE),
}
"""What history looks like in code: issue numbers, dates, work-session names and figures of measured runs."""

ALLOWED: Dict[Tuple[str, str], str] = {}
"""(file relative to the repository, matched text) -> why it is not history. Keep it short."""

MAX_HELP_LINES = 3
"""Lines of an option's help (its field docstring): what it does, its default, a pointer to where numbers live."""


def package_files() -> List[Path]:
    return sorted(path for folder in PACKAGE_DIRS for path in (ROOT / folder).rglob("*.py"))


def history_hits(text: str) -> List[Tuple[int, str, str]]:
    """(line number, kind, matched text) of every history pattern in ``text``."""
    hits = []
    for number, line in enumerate(text.splitlines(), start=1):
        for kind, pattern in HISTORY_PATTERNS.items():
            hits.extend((number, kind, match.group(0)) for match in pattern.finditer(line))
    return hits


def long_option_help(text: str, limit: int = MAX_HELP_LINES) -> List[Tuple[str, str, int]]:
    """(class, field, lines) of every annotated class field whose docstring has more than ``limit`` lines."""
    found = []
    for cls in (node for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ClassDef)):
        for node, following in zip(cls.body, cls.body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                lines = len(following.value.value.strip().splitlines())
                if lines > limit:
                    found.append((cls.name, node.target.id, lines))
    return found


def test_no_issue_numbers_dates_sessions_or_measurements_in_the_package():
    found = []
    for path in package_files():
        relative = path.relative_to(ROOT).as_posix()
        for number, kind, text in history_hits(path.read_text()):
            if (relative, text) not in ALLOWED:
                found.append(f"{relative}:{number}: {kind} {text!r}")
    assert found == [], "move these to benchmarks/, docs/ or the commit message:\n" + "\n".join(found)


def test_every_option_help_is_short():
    found = [f"{path.relative_to(ROOT).as_posix()}: {cls}.{name} has {lines} lines"
             for path in package_files() for cls, name, lines in long_option_help(path.read_text())]
    assert found == [], f"option help over {MAX_HELP_LINES} lines (say what and the default; point to the docs):\n" \
        + "\n".join(found)


def test_the_checks_see_history_and_long_help():
    text = '''
# ---- issue #6: viewer ----
class Example:
    fast: bool = False
    """Measured on 2026-11-26 (session 6): 630 ms/step, 24.53 dB, 3x faster; see #15."""
    verbose: int = 1
    """One.
    Two.
    Three.
    Four."""
    short: int = 2
    """Says what it does; the default is shown by tyro."""
'''
    kinds = {kind for _, kind, _ in history_hits(text)}
    assert kinds == set(HISTORY_PATTERNS)
    assert [text for _, kind, text in history_hits(text) if kind == "issue reference"] == ["issue #6", "#15"]
    assert long_option_help(text) == [("Example", "verbose", 4)]
    clean = "colour = '#000000'  # a hex colour, not an issue\nunits = 'PSNR in dB'\n"
    assert history_hits(clean) == []
