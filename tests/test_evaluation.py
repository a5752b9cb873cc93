"""COCO evaluation: faster-coco-eval against pycocotools on random cases, hand-computed AP,
per-category and per-occlusion-bin breakdowns, and input errors."""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instseg.data.coco_json import mask_to_rle, segmentation_to_mask
from instseg.errors import InputError
from instseg.evaluation import STAT_KEYS, ap_by_occlusion, evaluate, per_category_ap

# ----- random cases


def rle_bbox(rle: dict) -> list[float]:
    return mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).tolist()


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's list-of-counts RLE (column-major, starting with a run of zeros), as crowd regions use."""
    flat = mask.flatten(order="F")
    runs = [len(list(group)) for _, group in itertools.groupby(flat)]
    return {"counts": ([0] if flat[0] else []) + runs, "size": list(mask.shape)}


def ellipse(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, h / 3), rng.uniform(3, w / 3)
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def random_object(rng: np.random.Generator, h: int, w: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Annotation fields and the visible and amodal masks; polygons, RLE and crowd RLE all occur."""
    if rng.random() < 0.2:  # a rectangle polygon, unoccluded
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        x1, y1 = x0 + int(rng.integers(4, w - x0)), y0 + int(rng.integers(4, h - y0))
        poly = [[x0, y0, x1, y0, x1, y1, x0, y1]]
        mask = segmentation_to_mask(poly, h, w).astype(bool)
        area = int(mask.sum())
        return ({"segmentation": poly, "amodal_segmentation": poly, "area": area, "amodal_area": area,
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "amodal_bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0,
                 "occlusion_ratio": 0.0}, mask, mask)
    amodal = ellipse(rng, h, w)
    occluder = np.zeros_like(amodal)
    occluder[int(rng.integers(0, h)):, int(rng.integers(0, w)):] = True
    visible = amodal & ~occluder if (amodal & ~occluder).sum() >= 5 else amodal
    crowd = rng.random() < 0.1
    seg = uncompressed_rle(visible.astype(np.uint8)) if crowd else mask_to_rle(visible)
    return ({"segmentation": seg, "area": int(visible.sum()), "bbox": rle_bbox(mask_to_rle(visible)),
             "amodal_segmentation": mask_to_rle(amodal), "amodal_area": int(amodal.sum()),
             "amodal_bbox": rle_bbox(mask_to_rle(amodal)), "iscrowd": int(crowd),
             "occlusion_ratio": 1.0 - visible.sum() / amodal.sum()}, visible, amodal)


def detection(rng: np.random.Generator, mask: np.ndarray, image_id: int, category_id: int, kind: str) -> dict:
    """A detection of ``mask``; ``kind`` says which fields a result carries: segm, bbox or both."""
    rle = mask_to_rle(mask)
    det = {"image_id": image_id, "category_id": category_id, "score": round(float(rng.random()), 2)}  # ties too
    if kind in ("segm", "both"):
        det["segmentation"] = rle
    if kind in ("bbox", "both"):
        det["bbox"] = rle_bbox(rle)
    return det


def random_case(seed: int, kind: str, n_images: int = 8, n_categories: int = 3) -> tuple[dict, list[dict]]:
    """Ground truth and results: jittered ground truth (visible or amodal, sometimes the wrong
    class, some missed) plus false positives, with two-decimal scores."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, n_images + 1):
        h, w = (int(v) for v in rng.integers(40, 80, size=2))
        images.append({"id": image_id, "height": h, "width": w, "file_name": f"{image_id:03d}.png"})
        for _ in range(int(rng.integers(0, 6))):
            fields, visible, amodal = random_object(rng, h, w)
            category_id = int(rng.integers(1, n_categories + 1))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                                **fields})
            if rng.random() < 0.85:
                target = visible if rng.random() < 0.5 else amodal
                shifted = np.roll(target, tuple(int(v) for v in rng.integers(-2, 3, size=2)), axis=(0, 1))
                wrong = rng.random() < 0.1
                results.append(detection(rng, shifted, image_id, int(rng.integers(1, n_categories + 1)) if wrong
                                         else category_id, kind))
        for _ in range(int(rng.integers(0, 3))):
            results.append(detection(rng, ellipse(rng, h, w), image_id, int(rng.integers(1, n_categories + 1)), kind))
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, n_categories + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def amodal_view(gt: dict) -> dict:
    """The ground truth a user would write by hand to evaluate amodal masks with plain pycocotools."""
    anns = [dict(a, segmentation=a["amodal_segmentation"], bbox=a["amodal_bbox"], area=a["amodal_area"])
            for a in gt["annotations"]]
    return dict(gt, annotations=anns)


def reference_stats(gt: dict, results: list[dict], iou_type: str, image_ids: list | None = None,
                    category_ids: list | None = None) -> list:
    """pycocotools used directly, on deep copies; converted to our percent/None convention."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iou_type)
        if image_ids is not None:
            ev.params.imgIds = image_ids
        if category_ids is not None:
            ev.params.catIds = category_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [None if s < 0 else s * 100 for s in ev.stats]


def assert_stats_equal(metrics: dict, expected: list) -> None:
    got = [metrics[key] for key in STAT_KEYS]
    assert [g is None for g in got] == [e is None for e in expected], (got, expected)
    np.testing.assert_allclose([g for g in got if g is not None], [e for e in expected if e is not None],
                               rtol=0, atol=1e-9)


CASES = [("segm", "segm"), ("segm", "both"), ("bbox", "bbox"), ("bbox", "both")]


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
@pytest.mark.parametrize("iou_type,kind", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_cases_match_pycocotools(seed: int, iou_type: str, kind: str, backend: str) -> None:
    gt, results = random_case(seed, kind)
    before = copy.deepcopy((gt, results))
    metrics = evaluate(gt, results, iou_type, backend=backend)
    expected = reference_stats(gt, results, iou_type)
    assert_stats_equal(metrics, expected)
    assert 5 < metrics["AP"] < 95  # a case that can tell right from wrong
    assert (gt, results) == before  # the caller's data is untouched
    assert metrics["n_images"] == 8 and metrics["n_dt"] == len(results)
    assert metrics["n_gt"] == sum(1 for a in gt["annotations"] if not a["iscrowd"])
    json.dumps(metrics)


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_category_subset_matches_pycocotools_and_filtering(backend: str) -> None:
    """Scoring the novel categories only (partial supervision): params.catIds, which equals
    evaluating ground truth and results filtered to those categories."""
    gt, results = random_case(3, "segm")
    subset = [2, 3]
    metrics = evaluate(gt, results, "segm", category_ids=subset, backend=backend)
    assert_stats_equal(metrics, reference_stats(gt, results, "segm", category_ids=subset))
    filtered_gt = dict(gt, annotations=[a for a in gt["annotations"] if a["category_id"] in subset],
                       categories=[c for c in gt["categories"] if c["id"] in subset])
    filtered = evaluate(filtered_gt, [d for d in results if d["category_id"] in subset], "segm", backend=backend)
    assert metrics["AP"] == pytest.approx(filtered["AP"], abs=1e-9)
    assert metrics["AP"] != evaluate(gt, results, "segm", backend=backend)["AP"]
    with pytest.raises(InputError, match="category_ids not in the ground truth"):
        evaluate(gt, results, "segm", category_ids=[99])


@pytest.mark.parametrize("iou_type,kind", [("segm", "segm"), ("bbox", "bbox")])
def test_image_subset_matches_pycocotools(iou_type: str, kind: str) -> None:
    gt, results = random_case(2, kind)
    subset = [2, 3, 5, 8]
    metrics = evaluate(gt, results, iou_type, image_ids=subset)
    assert_stats_equal(metrics, reference_stats(gt, results, iou_type, subset))
    assert metrics != evaluate(gt, results, iou_type)  # the subset changes the numbers
    assert metrics["n_images"] == 4
    assert metrics["n_dt"] == sum(1 for d in results if d["image_id"] in subset)


@pytest.mark.parametrize("iou_type,kind", [("segm", "segm"), ("bbox", "bbox")])
def test_amodal_matches_pycocotools_on_amodal_fields(iou_type: str, kind: str) -> None:
    gt, results = random_case(3, kind)
    metrics = evaluate(gt, results, iou_type, amodal=True)
    assert_stats_equal(metrics, reference_stats(amodal_view(gt), results, iou_type))
    assert metrics["amodal"] is True and metrics["AP"] != evaluate(gt, results, iou_type)["AP"]


def test_files_and_polygon_or_uncompressed_results(tmp_path: Path) -> None:
    gt, results = random_case(4, "segm")
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    from_files = evaluate(tmp_path / "gt.json", str(tmp_path / "dt.json"))
    assert from_files == evaluate(gt, results)
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    mixed = copy.deepcopy(results)
    for d in mixed[::3]:  # the box outline of the mask as a polygon
        x, y, w, h = rle_bbox(d["segmentation"])
        d["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    for d in mixed[1::3]:
        d["segmentation"] = uncompressed_rle(segmentation_to_mask(d["segmentation"], *sizes[d["image_id"]]))
    rasterised = [dict(d, segmentation=mask_to_rle(segmentation_to_mask(d["segmentation"], *sizes[d["image_id"]])))
                  for d in mixed]
    faster = evaluate(gt, mixed)
    assert faster == evaluate(gt, rasterised) != from_files
    assert_stats_equal(evaluate(gt, mixed, backend="pycocotools"), [faster[key] for key in STAT_KEYS])


def test_results_with_and_without_boxes_mixed() -> None:
    gt, results = random_case(5, "both")
    for det in results[1::2]:
        del det["bbox"]
    faster = evaluate(gt, results)
    reference = evaluate(gt, results, backend="pycocotools")
    assert_stats_equal(faster, [reference[key] for key in STAT_KEYS])
    assert faster["AP"] is not None


# ----- hand-computed cases


def close(percent: float):
    """pycocotools' precision is tp / (tp + fp + eps), so a perfect 100 comes out as 99.99999999999999."""
    return pytest.approx(percent, abs=1e-9)


def square_scene(h: int = 32, w: int = 32) -> tuple[dict, np.ndarray]:
    """One 10x10 ground-truth square (area 100) at rows/cols 10..19."""
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[10:20, 10:20] = 1
    rle = mask_to_rle(mask)
    gt = {"images": [{"id": 1, "height": h, "width": w}], "categories": [{"id": 1, "name": "square"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle, "area": 100,
                           "bbox": [10.0, 10.0, 10.0, 10.0], "iscrowd": 0}]}
    return gt, mask


def test_perfect_detection_is_ap_100() -> None:
    gt, mask = square_scene()
    metrics = evaluate(gt, [{"image_id": 1, "category_id": 1, "segmentation": mask_to_rle(mask), "score": 0.5}])
    assert [metrics[k] for k in ("AP", "AP50", "AP75", "APs", "AR1", "AR100", "ARs")] == [close(100)] * 7
    assert metrics["APm"] is None and metrics["APl"] is None  # area 100 < 32**2: no medium or large object


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_iou_06_passes_three_of_ten_thresholds(backend: str) -> None:
    gt, mask = square_scene()
    partial = mask.copy()
    partial[16:20] = 0  # 60 of the 100 pixels: IoU 0.6 passes 0.50, 0.55, 0.60
    metrics = evaluate(gt, [{"image_id": 1, "category_id": 1, "segmentation": mask_to_rle(partial), "score": 0.5}],
                       backend=backend)
    assert (metrics["AP50"], metrics["AP75"], metrics["AP"]) == (close(100), 0.0, close(100 * 3 / 10))


def test_annotation_id_zero_is_not_lost() -> None:
    """The evaluators store matches as ground-truth ids with 0 meaning "unmatched"; ids are renumbered."""
    gt, mask = square_scene()
    gt["annotations"][0]["id"] = 0
    metrics = evaluate(gt, [{"image_id": 1, "category_id": 1, "segmentation": mask_to_rle(mask), "score": 0.5}])
    assert metrics["AP"] == close(100)


def test_empty_results_give_zero_not_a_crash() -> None:
    gt, _ = square_scene()
    for backend in ("faster", "pycocotools"):
        metrics = evaluate(gt, [], backend=backend)
        assert metrics["AP"] == metrics["AR100"] == 0.0 and metrics["n_dt"] == 0
        assert per_category_ap(gt, [], backend=backend) == {"square": {"AP": 0.0, "AP50": 0.0}}


def test_empty_image_subset_is_undefined_not_a_crash() -> None:
    gt, mask = square_scene()
    gt["images"].append({"id": 2, "height": 32, "width": 32})
    metrics = evaluate(gt, [{"image_id": 1, "category_id": 1, "segmentation": mask_to_rle(mask), "score": 0.5}],
                       image_ids=[2])
    assert all(metrics[key] is None for key in STAT_KEYS) and metrics["n_images"] == 1


def rect_rle(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> dict:
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask_to_rle(mask)


def test_per_category_ap_by_hand() -> None:
    gt = {"images": [{"id": 1, "height": 40, "width": 40}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rect_rle(40, 40, 0, 10, 0, 10), "area": 100,
               "bbox": [0, 0, 10, 10], "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 2, "segmentation": rect_rle(40, 40, 20, 30, 20, 30), "area": 100,
               "bbox": [20, 20, 10, 10], "iscrowd": 0}]}
    results = [{"image_id": 1, "category_id": 1, "segmentation": rect_rle(40, 40, 0, 10, 0, 10), "score": 0.9},
               {"image_id": 1, "category_id": 2, "segmentation": rect_rle(40, 40, 20, 26, 20, 30), "score": 0.9}]
    for backend in ("faster", "pycocotools"):
        table = per_category_ap(gt, results, backend=backend)
        assert table == {"a": {"AP": close(100), "AP50": close(100)}, "b": {"AP": close(30), "AP50": close(100)},
                         "c": {"AP": None, "AP50": None}}
    assert evaluate(gt, results)["AP"] == close(65)  # the mean of the defined categories


def occlusion_scene() -> tuple[dict, dict[str, dict]]:
    """Four same-class objects in separate places, occlusion ratios 0.2, 0.5 (a bin edge), 1.0 and a crowd region."""
    h = w = 60
    places = {"low": (0, 10, 0, 10), "edge": (20, 30, 0, 10), "full": (40, 50, 0, 10), "crowd": (0, 10, 40, 50),
              "nothing": (40, 50, 40, 50)}
    rles = {name: rect_rle(h, w, *place) for name, place in places.items()}
    ratios = {"low": 0.2, "edge": 0.5, "full": 1.0}
    anns = [{"id": k + 1, "image_id": 1, "category_id": 1, "segmentation": rles[name], "area": 100,
             "bbox": [places[name][2], places[name][0], 10, 10], "iscrowd": 0, "occlusion_ratio": ratios[name]}
            for k, name in enumerate(ratios)]
    anns.append({"id": 9, "image_id": 1, "category_id": 1, "segmentation": rles["crowd"], "area": 100,
                 "bbox": [40, 0, 10, 10], "iscrowd": 1})
    return {"images": [{"id": 1, "height": h, "width": w}], "categories": [{"id": 1, "name": "box"}],
            "annotations": anns}, rles


def det(rle: dict, score: float) -> dict:
    return {"image_id": 1, "category_id": 1, "segmentation": rle, "score": score}


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_ap_by_occlusion_by_hand(backend: str) -> None:
    gt, rles = occlusion_scene()
    bins = ((0.0, 0.5), (0.5, 1.0))
    # Only the low-occlusion object is found; a crowd hit is ignored everywhere.
    rows = ap_by_occlusion(gt, [det(rles["low"], 0.8), det(rles["crowd"], 0.95)], bins, backend=backend)
    assert [(r["bin"], r["n_gt"], r["AP"], r["AP50"], r["AP75"]) for r in rows] == [
        ([0.0, 0.5], 1, close(100), close(100), close(100)),  # ratio 0.5 is not in [0, 0.5)
        ([0.5, 1.0], 2, 0.0, 0.0, 0.0)]  # ratio 1.0 is in the last bin [0.5, 1]; the low hit is ignored here
    # A false positive ranked first is a false positive in every bin: precision 1/2 at full recall.
    rows = ap_by_occlusion(gt, [det(rles["low"], 0.8), det(rles["nothing"], 0.9)], bins, backend=backend)
    assert [r["AP"] for r in rows] == [close(50), 0.0]
    # Finding the high-occlusion objects scores that bin only.
    rows = ap_by_occlusion(gt, [det(rles["edge"], 0.8), det(rles["full"], 0.7)], bins, backend=backend)
    assert [r["AP"] for r in rows] == [0.0, close(100)]


def test_ap_by_occlusion_default_bins_and_empty_bin() -> None:
    gt, rles = occlusion_scene()
    rows = ap_by_occlusion(gt, [det(rles["low"], 0.8)])
    assert [r["bin"] for r in rows] == [[0.0, 0.1], [0.1, 0.3], [0.3, 0.5], [0.5, 1.0]]
    assert [(r["n_gt"], r["AP"]) for r in rows] == [(0, None), (1, close(100)), (0, None), (2, 0.0)]
    json.dumps(rows)


# ----- bad input


def write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("field,value,problem", [("image_id", 99, "image_id that is not in the ground truth"),
                                                 ("category_id", 7, "unknown category_id 7")])
def test_bad_result_names_file_and_record(tmp_path: Path, field: str, value: int, problem: str) -> None:
    gt, mask = square_scene()
    results = [det(mask_to_rle(mask), 0.9), dict(det(mask_to_rle(mask), 0.8), **{field: value})]
    with pytest.raises(InputError) as info:
        evaluate(write(tmp_path, "gt.json", gt), write(tmp_path, "results.json", results))
    assert "results.json" in str(info.value) and "results[1]" in str(info.value) and problem in str(info.value)


def test_amodal_without_amodal_fields_names_the_annotation(tmp_path: Path) -> None:
    gt, mask = square_scene()
    with pytest.raises(InputError, match=r"gt\.json: annotations\[0\] \(id=1, image_id=1\): .*'amodal_segmentation'"):
        evaluate(write(tmp_path, "gt.json", gt), [det(mask_to_rle(mask), 0.9)], amodal=True)


def test_occlusion_without_ratio_names_the_annotation(tmp_path: Path) -> None:
    gt, rles = occlusion_scene()
    del gt["annotations"][1]["occlusion_ratio"]
    with pytest.raises(InputError, match=r"gt\.json: annotations\[1\] \(id=2, image_id=1\): occlusion_ratio"):
        ap_by_occlusion(write(tmp_path, "gt.json", gt), [det(rles["low"], 0.9)])


def test_unknown_image_ids_and_backend() -> None:
    gt, mask = square_scene()
    with pytest.raises(InputError, match="image_ids not in the ground truth: \\[5\\]"):
        evaluate(gt, [], image_ids=[1, 5])
    with pytest.raises(ValueError, match="backend"):
        evaluate(gt, [], backend="detectron2")
