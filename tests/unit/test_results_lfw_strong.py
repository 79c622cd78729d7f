"""The strong-attack LFW results pages: the LFW grid at pool3 attacked by the fixed decoders,
their tuned twins and the white-box rmle (docs/results_lfw_strong.md), and its seed-2 pair with
a second, 8-candidate tuned twin (docs/results_lfw_strong_tune8.md), each in step with its
committed reference tables (docs/reference/<run>/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_results_md import assert_page_matches_its_tables  # (pytest puts this folder on sys.path)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("run", ["lfw_strong", "lfw_strong_tune8"])
def test_committed_strong_lfw_page_matches_the_reference_tables(run):
    assert_page_matches_its_tables(REPO / "docs" / "reference" / run, REPO / "docs" / f"results_{run}.md")
