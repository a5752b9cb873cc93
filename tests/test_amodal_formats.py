"""KINS and COCOA conversion, checked field by field on hand-written fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instseg.data.amodal_formats import cocoa_to_coco, detect_format, kins_to_coco, load_amodal
from instseg.data.coco_json import read_json, segmentation_to_mask
from instseg.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures"
KINS = FIXTURES / "kins_tiny.json"
COCOA = FIXTURES / "cocoa_tiny.json"

PER_ANNOTATION = ("id", "image_id", "category_id", "bbox", "area", "amodal_bbox", "amodal_area",
                  "depth", "occluder_ids", "iscrowd")


def summary(gt: dict) -> list[tuple]:
    return [tuple(a[key] for key in PER_ANNOTATION) for a in gt["annotations"]]


def load_cocoa(path: Path = COCOA) -> dict:
    with pytest.warns(UserWarning, match="dropped 1 fully occluded COCOA region"):
        return load_amodal(path)


def test_detect_format() -> None:
    assert detect_format(read_json(KINS)) == "kins"
    assert detect_format(read_json(COCOA)) == "cocoa"
    assert detect_format(read_json(FIXTURES / "coco_tiny.json")) == "coco"
    assert detect_format({"images": [], "annotations": []}) == "coco"


def test_kins_conversion_by_hand() -> None:
    gt = load_amodal(KINS)
    assert gt["images"] == read_json(KINS)["images"] and gt["categories"] == read_json(KINS)["categories"]
    assert summary(gt) == [
        # id image cat  visible box     area  amodal box      amodal  depth occluders crowd
        (11, 1, 4, [0, 0, 12, 10], 120, [0, 0, 12, 10], 120, 1, [], 0),
        (12, 1, 4, [8, 4, 12, 10], 96, [8, 4, 12, 10], 120, 0, [11], 0),
        (13, 1, 2, [24, 2, 4, 14], 56, [24, 2, 4, 14], 56, 1, [], 0),
        (21, 2, 1, [0, 0, 8, 8], 48, [0, 0, 8, 8], 64, 0, [], 0),
    ]
    assert [a["occlusion_ratio"] for a in gt["annotations"]] == pytest.approx([0.0, 0.2, 0.0, 0.25], abs=1e-12)
    assert [(a["oco_id"], a["ico_id"]) for a in gt["annotations"]] == [(1, 0), (1, 1), (2, 0), (1, 0)]
    raw = read_json(KINS)["annotations"]
    assert [a["segmentation"] for a in gt["annotations"]] == [a["i_segm"] for a in raw]
    assert [a["amodal_segmentation"] for a in gt["annotations"]] == [a["a_segm"] for a in raw]
    assert load_amodal(KINS, format="kins") == gt


def test_kins_without_ico_id_has_no_depth() -> None:
    data = read_json(KINS)
    del data["annotations"][2]["ico_id"]
    gt = kins_to_coco(data)
    assert not any("depth" in a for a in gt["annotations"])
    assert [a["occluder_ids"] for a in gt["annotations"]] == [[], [11], [], []]  # from the masks alone


def test_kins_errors_name_the_record(tmp_path: Path) -> None:
    data = read_json(KINS)
    del data["annotations"][1]["a_segm"]
    with pytest.raises(InputError, match=r"annotations\[1\] \(id=12\): KINS annotation lacks \['a_segm'\]"):
        kins_to_coco(data, "kins.json")
    data = read_json(KINS)
    data["annotations"][3]["i_segm"] = [[0, 0, 8, 0]]
    with pytest.raises(InputError, match=r"id=21.*'segmentation' polygon 0 has 2 points"):
        kins_to_coco(data, "kins.json")
    data = read_json(KINS)
    data["annotations"][0]["a_area"] = 0
    with pytest.raises(InputError, match="'a_area' must be"):
        kins_to_coco(data, "kins.json")


def test_cocoa_conversion_by_hand() -> None:
    gt = load_cocoa()
    assert gt["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert gt["images"] == read_json(COCOA)["images"]
    assert summary(gt) == [
        # id image cat visible box             area  amodal box               amodal depth occluders crowd
        (1, 101, 1, [2.0, 2.0, 8.0, 8.0], 64, [2.0, 2.0, 8.0, 8.0], 64, 2, [], 0),
        (2, 101, 1, [6.0, 6.0, 10.0, 10.0], 84, [6.0, 6.0, 10.0, 10.0], 100, 1, [1], 0),
        (3, 101, 1, [18.0, 0.0, 6.0, 4.0], 24, [18.0, 0.0, 6.0, 4.0], 24, 0, [], 0),
        (4, 102, 1, [0.0, 0.0, 12.0, 12.0], 144, [0.0, 0.0, 12.0, 12.0], 144, 2, [], 0),
        # region 5 (the bag) is fully occluded and dropped; "2-3" no longer links it
        (6, 102, 1, [8.0, 8.0, 8.0, 8.0], 48, [8.0, 8.0, 8.0, 8.0], 64, 0, [4], 0),
    ]
    assert [a["occlusion_ratio"] for a in gt["annotations"]] == [0.0, 0.16, 0.0, 0.0, 0.25]
    assert [(a["name"], a["isStuff"]) for a in gt["annotations"]] == [
        ("cup", 0), ("table", 0), ("wall", 1), ("person", 0), ("bench", 0)]
    cup = gt["annotations"][0]  # unoccluded, no visible_mask: visible = the amodal polygon
    assert cup["segmentation"] == cup["amodal_segmentation"] == [[2, 2, 10, 2, 10, 10, 2, 10]]
    table = gt["annotations"][1]
    visible = segmentation_to_mask(table["segmentation"], 20, 24)
    expected = np.zeros((20, 24), np.uint8)
    expected[6:16, 6:16] = 1
    expected[6:10, 6:10] = 0
    np.testing.assert_array_equal(visible, expected)


def test_cocoa_ids_stay_unique_when_an_early_region_is_dropped(tmp_path: Path) -> None:
    data = read_json(COCOA)
    data["annotations"].reverse()  # the image with the dropped region comes first
    path = tmp_path / "cocoa_reversed.json"
    path.write_text(json.dumps(data))
    gt = load_cocoa(path)
    assert [(a["id"], a["image_id"], a["occluder_ids"]) for a in gt["annotations"]] == [
        (1, 102, []), (3, 102, [1]), (4, 101, []), (5, 101, [4]), (6, 101, [])]


def test_cocoa_errors_name_the_record() -> None:
    data = read_json(COCOA)
    data["annotations"][0]["depth_constraint"] = "1-2,3"
    with pytest.raises(InputError, match=r"cocoa.json: annotations\[0\] \(image_id=101\): "
                                         r"bad depth_constraint pair '3'"):
        cocoa_to_coco(data, "cocoa.json")
    data = read_json(COCOA)
    data["annotations"][0]["depth_constraint"] = "1-4"
    with pytest.raises(InputError, match="names a region that does not exist"):
        cocoa_to_coco(data, "cocoa.json")
    data = read_json(COCOA)
    del data["annotations"][1]["regions"][0]["order"]
    with pytest.raises(InputError, match=r"annotations\[1\] \(image_id=102\) regions\[0\]: .*'order'"):
        cocoa_to_coco(data, "cocoa.json")
    data = read_json(COCOA)
    data["annotations"][0]["regions"][1]["visible_mask"]["size"] = [24, 20]
    with pytest.raises(InputError, match=r"regions\[1\]: 'visible_mask' size \[24, 20\]"):
        cocoa_to_coco(data, "cocoa.json")


def test_coco_passes_through_checked() -> None:
    assert load_amodal(FIXTURES / "coco_tiny.json") == read_json(FIXTURES / "coco_tiny.json")
    with pytest.raises(InputError, match="missing top-level key 'categories'"):
        load_amodal(COCOA, format="coco")
    with pytest.raises(ValueError, match="format must be"):
        load_amodal(COCOA, format="lvis")
