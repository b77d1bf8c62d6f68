"""A clone is self-contained: no tracked file sends its reader outside the
repository, and every relative link in the documents leads to a file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.paths import ROOT

# Spelled in two halves so that this file does not mention them itself.
OUTSIDE = ("../" + "shared", "FIELD" + "-NOTES")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    paths = []
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        raw = path.read_bytes()
        if b"\0" in raw:
            continue  # binary
        paths.append(path)
    return paths


def test_no_tracked_file_points_outside_the_repository() -> None:
    files = tracked_text_files()
    assert any(path.name == "README.md" for path in files)
    found = [
        f"{path.relative_to(ROOT)}: {word}"
        for path in files
        for word in OUTSIDE
        if word in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert not found, found


def relative_links_of(text: str) -> list[str]:
    """Link targets that are neither a URL (``https:``, ``mailto:``) nor an anchor."""
    return [t for t in LINK.findall(text) if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", t)]


def relative_links(document: Path) -> list[str]:
    return relative_links_of(document.read_text(encoding="utf-8"))


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file(document: Path) -> None:
    missing = [
        target
        for target in relative_links(document)
        if not (document.parent / target.split("#")[0]).exists()
    ]
    assert not missing, missing


def test_the_link_check_sees_the_documents_links() -> None:
    assert "docs/INTERFACE.md" in relative_links(ROOT / "README.md")
    assert "CONFIGURATION.md" in relative_links(ROOT / "docs" / "INTERFACE.md")
    assert relative_links_of("[a](https://x.example/) [b](#here) [c](mailto:a@b) [d](x.md)") == [
        "x.md"
    ]
