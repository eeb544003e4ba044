"""Relative links in the README, the CHANGELOG, docs/ and benchmarks/ point at files that exist and at headings those
files have."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def markdown_files() -> List[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md")),
            *sorted((ROOT / "benchmarks").rglob("*.md"))]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> List[str]:
    text = FENCE.sub("", path.read_text())
    return [anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"^#{1,6} ", line)]


def broken_links(path: Path) -> List[str]:
    """``target (why)`` of every relative link in ``path`` whose file or heading is missing."""
    broken = []
    for target in LINK.findall(FENCE.sub("", path.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    return broken


def test_the_changelog_and_every_benchmarks_readme_are_checked():
    checked = {path.relative_to(ROOT).as_posix() for path in markdown_files()}
    readmes = {path.relative_to(ROOT).as_posix() for path in (ROOT / "benchmarks").rglob("README.md")}
    assert "CHANGELOG.md" in checked and "benchmarks/README.md" in readmes and readmes <= checked


def test_links_resolve():
    found = [f"{path.relative_to(ROOT)}: {line}" for path in markdown_files() for line in broken_links(path)]
    assert found == [], "\n".join(found)


def test_the_check_sees_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# A `code` heading: here\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-code-heading-here) [file](missing.md) [head](other.md#nope) [web](https://x.y)\n")
    assert broken_links(page) == ["missing.md (no such file)", "other.md#nope (no such heading)"]
