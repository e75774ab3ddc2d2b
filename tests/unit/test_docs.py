"""The documentation stands alone and matches the code.

- No tracked file refers to a file outside the repository (a clone has only the repository).
- docs/actions/*.md are what ``python -m local.docs`` writes from actions.py and the packaged subscriptions.
- Relative links in the README and docs/ point at files that exist.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from segment_qualtrics.destination.actions import ACTIONS

from local.docs import RECEIVES, pages

ROOT = Path(__file__).resolve().parents[2]
# Spelled in pieces so this file does not match itself.
OUTSIDE = [".." + "/shared", "DESIGN" + ".md", "reference" + " section", "reference" + "/"]


def tracked_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / n for n in names.split("\0") if n and (ROOT / n).is_file()]


def test_no_file_refers_outside_the_repository():
    found = []
    for path in tracked_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for needle in OUTSIDE
                      if needle.lower() in line.lower()]
    assert found == []


@pytest.mark.parametrize("path", sorted(pages()), ids=lambda p: p.name)
def test_action_pages_are_generated_from_the_code(path: Path):
    """Run `python -m local.docs` after changing an action's fields or the packaged subscriptions."""
    assert path.exists() and path.read_text() == pages()[path]


def test_every_field_says_what_qualtrics_receives():
    for slug, action in ACTIONS.items():
        assert set(RECEIVES[slug]) == set(action.fields), slug


def test_relative_links_resolve():
    broken = []
    for doc in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []
