"""Paper rows found by content and headlines taken by row name (the defect: a headline read the
MaskX row as CPMask's because a row was inserted before it)."""

from __future__ import annotations

import pandas as pd
import pytest

from instseg.experiments.paper import paper_row
from instseg.experiments.verdicts import (
    PAPER_ROWS,
    paper_difference,
    paper_rows,
    row_means,
    table_4_1_paper_rows,
    table_4_1_rows,
    table_family,
)


def test_paper_row_matches_content_and_needs_exactly_one_row() -> None:
    assert paper_row("table_3_3", structure="Bilayer", gcn=True)["coco_occ_ap"] == 30.68
    with pytest.raises(KeyError, match="2 rows"):
        paper_row("table_3_3", structure="Bilayer")
    with pytest.raises(KeyError, match="no columns"):
        paper_row("table_3_3", colour="red")


def test_every_mapped_row_finds_its_paper_row() -> None:
    for table in PAPER_ROWS:
        assert len(paper_rows(table)) == len(PAPER_ROWS[table])
    assert paper_difference("table_3_1", "t31_baseline", "t31_contour_mask", "coco_occ_ap") == pytest.approx(1.33)
    assert paper_difference("table_3_1", "t31_baseline", "not_a_row", "coco_occ_ap") is None


def test_table_4_1_rows_pair_with_the_papers_by_method_name() -> None:
    rows = table_4_1_paper_rows("A")
    assert list(rows) == list(table_4_1_rows("A"))
    assert rows["cpmask_A"]["name"] == "Ours" and rows["maskx_A"]["name"] == "MaskX R-CNN"
    assert rows["cpmask_oracle"]["voc_to_nonvoc_ap"] == 37.9


def test_headline_means_are_taken_by_row_name_whatever_the_row_order() -> None:
    # MaskX inserted before CPMask: a positional headline would read 1.96 as CPMask's AP
    runs = pd.DataFrame({"variant": ["fcn_A", "grabcut", "maskx_A", "cpmask_A"] * 2, "seed": [0] * 4 + [1] * 4,
                         "AP": [0.5, 38.0, 1.9, 1.4, 0.6, 38.0, 2.0, 1.5]})
    means = row_means(runs.sample(frac=1.0, random_state=1), {"cpmask": "cpmask_A", "maskx": "maskx_A"}, "AP")
    assert means == pytest.approx({"cpmask": 1.45, "maskx": 1.95})
    with pytest.raises(KeyError, match="cpmask_B"):
        row_means(runs, {"cpmask": "cpmask_B"}, "AP")


def test_table_family_carries_the_papers_difference_for_each_pair() -> None:
    runs = pd.DataFrame({"variant": ["t31_baseline"] * 3 + ["t31_contour_mask"] * 3, "seed": [0, 1, 2] * 2,
                         "val_occ_AP": [20.0, 21.0, 22.0, 21.0, 22.5, 23.0]})
    (v,) = table_family(runs, "table_3_1", [("t31_baseline", "t31_contour_mask")], {"val_occ_AP": "coco_occ_ap"})
    assert v.paper == pytest.approx(1.33) and v.ours == pytest.approx(1.1667, abs=1e-3) and v.family == 1
