"""YouTube-VIS AP/AR and OVIS AP by occlusion against an oracle written here from the protocol,
with plain loops over decoded masks, and against hand-computed cases."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from instseg.data.coco_json import mask_to_rle
from instseg.errors import InputError
from instseg.video.evaluation.ytvis import _tracks, ap_by_occlusion_vis, evaluate_vis, occlusion_score, sequence_ious

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)
AREAS = {"all": (0, 1e10), "small": (0, 128 ** 2), "medium": (128 ** 2, 256 ** 2), "large": (256 ** 2, 1e10)}
LEVELS = {"none": 0.0, "slight": 0.25, "severe": 0.75}


# ----------------------------------------------------------------------------- random cases

def _rand_mask(rng: np.random.Generator, h: int, w: int, like: np.ndarray | None = None) -> np.ndarray:
    if like is not None:
        return (like ^ (rng.random((h, w)) < rng.choice([0.0, 0.05, 0.2, 0.4]))).astype(np.uint8)
    if h > 100:  # a rectangle on a big frame, sometimes exactly 128x128 or 256x256 pixels
        side = int(rng.choice([100, 128, 129, 200, 256]))
        side = min(side, h, w)
        mask = np.zeros((h, w), np.uint8)
        mask[:side, :side] = 1
        return mask
    return (rng.random((h, w)) < rng.uniform(0.1, 0.7)).astype(np.uint8)


def make_case(seed: int) -> tuple[dict, list[dict]]:
    """A small random YouTube-VIS gt and results: ties, null frames, crowd, areas on the range
    bounds, videos without gt, unmatched results, up to 8 categories, sometimes > 100 results."""
    rng = np.random.default_rng(seed)
    n_cat = int(rng.choice([1, 2, 3, 8]))
    categories = [{"id": c + 1, "name": f"c{c + 1}"} for c in range(n_cat)]
    videos, annotations, results = [], [], []
    for v in range(int(rng.integers(1, 5))):
        h, w = (257, 256) if rng.random() < 0.15 else (int(rng.integers(3, 8)), int(rng.integers(3, 8)))
        length = int(rng.integers(1, 5))
        vid = 10 * v + 7
        videos.append({"id": vid, "height": h, "width": w, "length": length,
                       "file_names": [f"v{vid}/{t:05d}.jpg" for t in range(length)]})
        gt_masks = []
        for _ in range(int(rng.choice([0, 1, 2, 3, 4]))):
            masks = [None if rng.random() < 0.3 else _rand_mask(rng, h, w) for _ in range(length)]
            gt_masks.append(masks)
            areas = [None if m is None else int(m.sum()) for m in masks]
            if rng.random() < 0.3:  # the file's areas, not the masks', are what ytvoseval reads
                areas = [None if m is None else float(rng.choice([128 ** 2, 256 ** 2, 0, 5, 70000.5]))
                         for m in masks]
            ann = {"id": 3 * len(annotations) + 1, "video_id": vid, "category_id": int(rng.integers(1, n_cat + 1)),
                   "iscrowd": int(rng.random() < 0.15), "areas": areas,
                   "segmentations": [None if m is None else mask_to_rle(m) for m in masks],
                   "bboxes": [None if m is None else [0, 0, 1, 1] for m in masks],
                   "occlusion": [None if m is None and rng.random() < 0.5 else str(rng.choice(list(LEVELS)))
                                 for m in masks]}
            if all(level is None for level in ann["occlusion"]):
                ann["occlusion"][0] = "slight"
            annotations.append(ann)
        n_res = 105 if rng.random() < 0.03 else int(rng.integers(0, 7))
        for _ in range(n_res):
            like = gt_masks[int(rng.integers(len(gt_masks)))] if gt_masks and rng.random() < 0.7 else None
            masks = []
            for t in range(length):
                if rng.random() < 0.2:
                    masks.append(None)
                elif like is not None and like[t] is not None:
                    masks.append(_rand_mask(rng, h, w, like[t]))
                else:
                    masks.append(_rand_mask(rng, h, w))
            results.append({"video_id": vid, "category_id": int(rng.integers(1, n_cat + 1)),
                            "score": float(rng.choice([0.1, 0.5, 0.5, 0.7, 0.9, rng.random()])),
                            "segmentations": [None if m is None else mask_to_rle(m) for m in masks]})
    return {"videos": videos, "annotations": annotations, "categories": categories}, results


# ----------------------------------------------------------------------------- the oracle

def _decode(rle: dict | None) -> np.ndarray | None:
    from pycocotools import mask as mask_utils
    return None if rle is None else mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})


def _seq_iou(d: list, g: list) -> float:
    inter = union = 0
    for dm, gm in zip(d, g):
        if dm is not None and gm is not None:
            inter += int(np.logical_and(dm, gm).sum())
            union += int(np.logical_or(dm, gm).sum())
        elif dm is not None:
            union += int(dm.sum())
        elif gm is not None:
            union += int(gm.sum())
    return inter / union if union > 0 else 0.0


def _avg(areas: list) -> float:
    kept = [a for a in areas if a]
    return float(np.mean(kept)) if kept else 0.0


def _match(dts: list[dict], gts: list[dict], ious: np.ndarray, t: float, rng: tuple, gt_ignored: list[bool]):
    """Greedy matching in score order: non-ignored gt first, crowd gt reusable; returns per dt
    (matched, ignored)."""
    order = sorted(range(len(gts)), key=lambda j: gt_ignored[j])
    taken = set()
    out = []
    for i, d in enumerate(dts):
        best, best_iou = None, min(t, 1 - 1e-10)
        for j in order:
            if j in taken and not gts[j]["iscrowd"]:
                continue
            if best is not None and not gt_ignored[best] and gt_ignored[j]:
                break
            if ious[i, j] < best_iou:
                continue
            best, best_iou = j, ious[i, j]
        if best is None:
            out.append((False, not (rng[0] <= d["area"] <= rng[1])))
        else:
            taken.add(best)
            out.append((True, gt_ignored[best]))
    return out


def _precision_recall(flags: list[tuple[float, bool, bool]], n_gt: int) -> tuple[list[float], float]:
    flags = [f for f in sorted(flags, key=lambda f: -f[0]) if not f[2]]
    tp = fp = 0
    rc, pr = [], []
    for _, matched, _ in flags:
        tp += matched
        fp += not matched
        rc.append(tp / n_gt)
        pr.append(tp / (tp + fp + np.spacing(1)))
    for i in range(len(pr) - 2, -1, -1):
        pr[i] = max(pr[i], pr[i + 1])
    q, k = [], 0
    for r in REC_THRS:  # the precision at the first rank reaching recall r, 0 if none does
        while k < len(rc) and rc[k] < r:
            k += 1
        q.append(pr[k] if k < len(rc) else 0.0)
    return q, (rc[-1] if rc else 0.0)


def oracle(gt: dict, results: list[dict], area_ranges: dict, gt_out: list[bool] | None = None) -> dict:
    """{(area, max_det): (precision [T, R, K] with nan where undefined, recall [T, K])}."""
    gts = [dict(a, masks=[_decode(m) for m in a["segmentations"]], area=_avg(a["areas"]), k=k)
           for k, a in enumerate(gt["annotations"])]
    dts = []
    for r in results:
        masks = [_decode(m) for m in r["segmentations"]]
        dts.append(dict(r, masks=masks, area=_avg([None if m is None else int(m.sum()) for m in masks])))
    cats = sorted(c["id"] for c in gt["categories"])
    vids = sorted(v["id"] for v in gt["videos"])
    blocks = {}  # (video, category) -> (gts, dts in score order, at most 100; their IoUs)
    for v in vids:
        for c in cats:
            g = [x for x in gts if x["video_id"] == v and x["category_id"] == c]
            d = sorted([x for x in dts if x["video_id"] == v and x["category_id"] == c], key=lambda x: -x["score"])
            d = d[:100]
            ious = np.array([[_seq_iou(a["masks"], b["masks"]) for b in g] for a in d]).reshape(len(d), len(g))
            blocks[v, c] = g, d, ious
    out = {}
    for area_name, rng in area_ranges.items():
        for max_det in (1, 10, 100):
            precision = np.full((10, 101, len(cats)), np.nan)
            recall = np.full((10, len(cats)), np.nan)
            for k, c in enumerate(cats):
                flags = {ti: [] for ti in range(10)}
                n_gt = 0
                for v in vids:
                    g, d, ious = blocks[v, c]
                    ignored = [bool(x["iscrowd"]) or not (rng[0] <= x["area"] <= rng[1])
                               or bool(gt_out and gt_out[x["k"]]) for x in g]
                    n_gt += sum(not i for i in ignored)
                    for ti, t in enumerate(IOU_THRS):
                        matches = _match(d, g, ious, t, rng, ignored)
                        flags[ti] += [(x["score"], m, ig) for x, (m, ig) in zip(d[:max_det], matches[:max_det])]
                if n_gt == 0:
                    continue
                for ti in range(10):
                    precision[ti, :, k], recall[ti, k] = _precision_recall(flags[ti], n_gt)
            out[area_name, max_det] = (precision, recall)
    return out


def _mean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else None


def oracle_stats(gt: dict, results: list[dict]) -> dict:
    o = oracle(gt, results, AREAS)
    ap = {key: o[key][0] for key in o}
    ar = {key: o[key][1] for key in o}
    return {"AP": _mean(ap["all", 100]), "AP50": _mean(ap["all", 100][0]), "AP75": _mean(ap["all", 100][5]),
            "APs": _mean(ap["small", 100]), "APm": _mean(ap["medium", 100]), "APl": _mean(ap["large", 100]),
            "AR1": _mean(ar["all", 1]), "AR10": _mean(ar["all", 10]), "AR100": _mean(ar["all", 100]),
            "ARs": _mean(ar["small", 100]), "ARm": _mean(ar["medium", 100]), "ARl": _mean(ar["large", 100])}


def _assert_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] is not None and abs(got[key] - value) <= 1e-12, (key, got[key], value)


# ----------------------------------------------------------------------------- randomized

@pytest.mark.parametrize("seed", range(200))
def test_evaluate_vis_equals_the_oracle(seed: int) -> None:
    gt, results = make_case(seed)
    got = evaluate_vis(gt, results)
    assert tuple(got) == STAT_KEYS
    _assert_close(got, oracle_stats(gt, results))


@pytest.mark.parametrize("seed", range(200, 230))
def test_ap_by_occlusion_equals_the_oracle(seed: int) -> None:
    gt, results = make_case(seed)
    scores = [sorted(LEVELS[x] for x in a["occlusion"] if x) for a in gt["annotations"]]
    scores = [sum(s[-math.ceil(len(s) / 2):]) / math.ceil(len(s) / 2) for s in scores]
    got = ap_by_occlusion_vis(gt, results)
    for name, (lo, hi) in {"light": (0, 0.25), "medium": (0.25, 0.5), "heavy": (0.5, 1)}.items():
        out = [not lo <= s <= hi for s in scores]
        want = _mean(oracle(gt, results, {"all": AREAS["all"]}, out)["all", 100][0])
        n_gt = sum(1 for a, o in zip(gt["annotations"], out) if not o and not a["iscrowd"])
        assert got[name]["n_gt"] == n_gt
        _assert_close({"AP": got[name]["AP"]}, {"AP": want})


def test_random_cases_cover_the_edge_cases() -> None:
    """The generator really produces what the randomized tests claim to cover."""
    cases = [make_case(seed) for seed in range(200)]
    anns = [a for gt, _ in cases for a in gt["annotations"]]
    assert any(a["iscrowd"] for a in anns)
    assert any(None in a["segmentations"] for a in anns)
    assert any(128 ** 2 in a["areas"] for a in anns) and any(256 ** 2 in a["areas"] for a in anns)
    assert any(len([r for r in res if r["video_id"] == v["id"]]) > 100 for gt, res in cases for v in gt["videos"])
    assert any(not [a for a in gt["annotations"] if a["video_id"] == v["id"]] for gt, _ in cases for v in gt["videos"])
    assert any(len({r["score"] for r in res}) < len(res) for _, res in cases)
    assert any(len(gt["categories"]) == 8 for gt, _ in cases)


# ----------------------------------------------------------------------------- hand-computed

def _mask(h: int, w: int, pixels: list[tuple[int, int]]) -> dict:
    m = np.zeros((h, w), np.uint8)
    for y, x in pixels:
        m[y, x] = 1
    return mask_to_rle(m)


def _one_video(gt_tracks: list[list], res_tracks: list[tuple[float, list]], crowd: tuple = (), areas=None,
               h: int = 4, w: int = 5) -> tuple[dict, list[dict]]:
    length = len(gt_tracks[0]) if gt_tracks else len(res_tracks[0][1])
    anns = [{"id": k + 1, "video_id": 1, "category_id": 1, "iscrowd": int(k in crowd),
             "segmentations": [None if p is None else _mask(h, w, p) for p in track],
             "areas": areas[k] if areas else [None if p is None else len(p) for p in track]}
            for k, track in enumerate(gt_tracks)]
    res = [{"video_id": 1, "category_id": 1, "score": score,
            "segmentations": [None if p is None else _mask(h, w, p) for p in track]} for score, track in res_tracks]
    return {"videos": [{"id": 1, "height": h, "width": w, "length": length}], "annotations": anns,
            "categories": [{"id": 1}]}, res


ROW = [(0, x) for x in range(5)]


def test_one_match_at_iou_0_6_counts_at_50_not_75() -> None:
    gt, res = _one_video([[ROW]], [(0.9, [ROW[:3]])])
    got = evaluate_vis(gt, res)
    assert got["AP50"] == pytest.approx(1.0, abs=1e-12) and got["AP75"] == 0.0


def test_iou_0_62_is_matched_at_three_of_ten_thresholds() -> None:
    pixels = [(y, x) for y in range(10) for x in range(5)]  # 50 pixels, the result covers 31
    gt, res = _one_video([[pixels]], [(0.9, [pixels[:31]])], h=10, w=5)
    got = evaluate_vis(gt, res)
    assert got["AP"] == pytest.approx(0.3, abs=1e-12) and got["AR100"] == pytest.approx(0.3, abs=1e-12)
    assert got["APs"] == pytest.approx(0.3, abs=1e-12) and got["APm"] is None and got["APl"] is None


def test_a_frame_missing_on_one_side_adds_to_the_union_only() -> None:
    """gt present in frames 0 and 1, the result only in frame 0 with the same mask: IoU 5 / 10;
    a frame where both are null adds nothing."""
    gt, res = _one_video([[ROW, ROW, None]], [(0.9, [ROW, None, None])])
    gts, dts = _tracks(gt, res)
    assert sequence_ious(dts, gts).tolist() == [[0.5]]
    got = evaluate_vis(gt, res)
    assert got["AP50"] == pytest.approx(1.0, abs=1e-12) and got["AP"] == pytest.approx(0.1, abs=1e-12)


def test_crowd_gt_absorbs_its_matches_without_false_positives() -> None:
    other = [(1, x) for x in range(5)]
    gt, res = _one_video([[ROW], [other]], [(0.9, [ROW]), (0.8, [other]), (0.7, [other])], crowd=(1,))
    got = evaluate_vis(gt, res)
    assert got["AP"] == pytest.approx(1.0, abs=1e-12) and got["AR1"] == 1.0
    gt, res = _one_video([[other]], [(0.9, [other])], crowd=(0,))
    assert all(v is None for v in evaluate_vis(gt, res).values())


def test_area_on_the_128_squared_bound_is_both_small_and_medium() -> None:
    gt, res = _one_video([[ROW]], [(0.9, [ROW])], areas=[[128 ** 2]])
    got = evaluate_vis(gt, res)
    assert got["APs"] == pytest.approx(1.0, abs=1e-12) and got["APm"] == pytest.approx(1.0, abs=1e-12)
    assert got["APl"] is None and got["ARm"] == 1.0


def test_empty_results_score_zero_where_defined() -> None:
    gt, _ = _one_video([[ROW]], [])
    got = evaluate_vis(gt, [])
    assert got["AP"] == 0.0 and got["AR100"] == 0.0 and got["APm"] is None


def test_score_ties_keep_result_order() -> None:
    """Two results tie; the first listed (a miss) ranks first, as mergesort keeps it: AP50 is the
    precision 1/2 interpolated over every recall threshold."""
    other = [(1, x) for x in range(5)]
    gt, res = _one_video([[ROW]], [(0.5, [other]), (0.5, [ROW])])
    assert evaluate_vis(gt, res)["AP50"] == pytest.approx(0.5, abs=1e-12)
    gt, res = _one_video([[ROW]], [(0.5, [ROW]), (0.5, [other])])
    assert evaluate_vis(gt, res)["AP50"] == pytest.approx(1.0, abs=1e-12)


def test_video_subset_and_unknown_ids() -> None:
    gt, res = make_case(3)
    first = gt["videos"][0]["id"]
    sub_gt = dict(gt, videos=gt["videos"][:1], annotations=[a for a in gt["annotations"] if a["video_id"] == first])
    _assert_close(evaluate_vis(gt, res, video_ids=[first]),
                  oracle_stats(sub_gt, [r for r in res if r["video_id"] == first]))
    with pytest.raises(InputError, match="999"):
        evaluate_vis(gt, res, video_ids=[999])


def test_result_for_an_unknown_video_is_an_input_error() -> None:
    gt, res = _one_video([[ROW]], [(0.9, [ROW])])
    res[0]["video_id"] = 77
    with pytest.raises(InputError, match=r"results\[0\].*video 77"):
        evaluate_vis(gt, res)


def test_occlusion_score_is_the_mean_of_the_top_half() -> None:
    assert occlusion_score(["none", "slight", "severe"]) == 0.5
    assert occlusion_score(["none", None, "none", "severe"]) == 0.375
    assert occlusion_score([None, None]) is None


def test_ap_by_occlusion_ignores_gt_outside_the_bin() -> None:
    other = [(1, x) for x in range(5)]
    far = [(3, x) for x in range(5)]
    gt, res = _one_video([[ROW], [other]], [(0.9, [ROW]), (0.8, [far])])
    gt["annotations"][0]["occlusion"] = ["none"]
    gt["annotations"][1]["occlusion"] = ["severe"]
    got = ap_by_occlusion_vis(gt, res)
    assert got["light"]["AP"] == pytest.approx(1.0, abs=1e-12) and got["light"]["n_gt"] == 1
    assert got["heavy"] == {"AP": 0.0, "n_gt": 1}  # the light match is ignored, the miss is a false positive
    assert got["medium"] == {"AP": None, "n_gt": 0}


def test_ap_by_occlusion_needs_labels() -> None:
    gt, res = _one_video([[ROW]], [(0.9, [ROW])])
    with pytest.raises(InputError, match=r"annotations\[0\] \(id=1, video_id=1\).*occlusion"):
        ap_by_occlusion_vis(gt, res)


def test_inputs_are_not_modified() -> None:
    gt, res = make_case(5)
    before = copy.deepcopy((gt, res))
    evaluate_vis(gt, res)
    ap_by_occlusion_vis(gt, res)
    assert (gt, res) == before
