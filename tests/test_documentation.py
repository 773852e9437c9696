"""The documentation holds together: links resolve, decision references resolve, the README stays short."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", ".git", "var", "results", "node_modules", "__pycache__", ".pytest_cache", ".hypothesis"}


def project_files(suffix: str) -> list[Path]:
    """Files of the project ending in `suffix`, without walking the virtualenv or local state."""
    found = []
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in SKIP]
        found += [Path(folder) / name for name in names if name.endswith(suffix)]
    return sorted(found)


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         *(page for page in project_files("README.md") if page.parent != ROOT)]
# Markdown links and images to files of the repository (not web addresses, not in-page anchors).
LINK = re.compile(r"\]\((?!https?://|#)([^)#\s]+)(?:#[^)\s]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_of_a_page_points_at_a_file_of_the_repository(page: Path) -> None:
    broken = [target for target in LINK.findall(page.read_text()) if not (page.parent / target).exists()]
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_every_decision_a_comment_cites_is_in_the_design_document() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    numbered = {int(n) for n in re.findall(r"^### (\d+)\. ", design, re.M)}
    assert numbered == set(range(1, max(numbered) + 1)), "decisions are numbered 1..N without gaps"
    cited, stale = {}, []
    for path in project_files(".py"):
        if "DESIGN" + " decision" in path.read_text():  # the old name of the design document
            stale.append(str(path.relative_to(ROOT)))
        for number in re.findall(r"docs/design\.md, decision (\d+)", path.read_text()):
            cited.setdefault(int(number), []).append(str(path.relative_to(ROOT)))
    assert not stale, f"cite 'docs/design.md, decision N' instead: {stale}"
    assert cited, "the code cites the design document's decisions"
    unknown = {n: where for n, where in cited.items() if n not in numbered}
    assert not unknown, f"decisions cited but not in docs/design.md: {unknown}"


def test_the_original_specification_ships_with_the_project() -> None:
    spec = (ROOT / "docs" / "original-specification.md").read_text()
    assert "docs/design.md" in spec.splitlines()[0]
    assert "## Reward Function" in spec and "`NUM_REPLICAS` | `2`" in spec


def test_the_readme_is_a_short_front_door() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12_000
    for command in ("make run", "make test", "make test-fast"):
        assert command in readme
    for page in ("docs/design.md", "docs/configuration.md", "docs/operations.md", "rlagent_client/README.md"):
        assert f"({page})" in readme, page


def test_every_make_command_the_readme_shows_is_a_makefile_target() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    shown = set(re.findall(r"\bmake ([\w-]+)", (ROOT / "README.md").read_text()))
    assert shown and not shown - targets, f"README shows make targets the Makefile lacks: {shown - targets}"
