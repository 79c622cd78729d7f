"""The strong-attack LFW results page (docs/results_lfw_strong.md): the LFW grid at pool3 attacked
by the fixed decoders, their tuned twins and the white-box rmle, in step with its committed
reference tables (docs/reference/lfw_strong/)."""

from __future__ import annotations

from pathlib import Path

from test_results_md import assert_page_matches_its_tables  # (pytest puts this folder on sys.path)

REPO = Path(__file__).resolve().parents[2]


def test_committed_strong_lfw_page_matches_the_reference_tables():
    assert_page_matches_its_tables(
        REPO / "docs" / "reference" / "lfw_strong", REPO / "docs" / "results_lfw_strong.md"
    )
