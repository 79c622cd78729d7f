"""docs/results.md, the index of the reference results: each of its sections links one generated
results page, and every number in that section's tables is on the page it links (so the index
cannot quote a number its tables do not give, nor keep one after the page is regenerated)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INDEX = REPO / "docs" / "results.md"
PAGE_LINK = re.compile(r"\]\((results_[a-z0-9_]+\.md)\)")
NUMBER = re.compile(r"-?\d+\.\d+")


def sections(text: str) -> dict[str, str]:
    """The index's ``## `` sections by title."""
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    return {p.splitlines()[0]: p for p in parts}


def test_every_number_of_the_index_is_on_the_page_it_links():
    if not INDEX.exists():
        pytest.skip("docs/results.md does not exist")
    found = sections(INDEX.read_text(encoding="utf-8"))
    assert found, "docs/results.md has no sections"
    for title, body in found.items():
        pages = set(PAGE_LINK.findall(body))
        assert len(pages) == 1, f"section {title!r} links {sorted(pages) or 'no'} results page(s), not one"
        page = (INDEX.parent / pages.pop()).read_text(encoding="utf-8")
        table = "\n".join(line for line in body.splitlines() if line.startswith("|"))
        missing = [n for n in NUMBER.findall(table) if n not in page]
        assert not missing, f"section {title!r} quotes numbers its page does not have: {missing}"
