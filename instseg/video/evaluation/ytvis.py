"""YouTube-VIS AP/AR, as the official ``ytvoseval.py`` (youtubevos/cocoapi) computes it, and the
OVIS AP by occlusion level (qjy981010/cocoapi ``oviseval.py``).

``ytvoseval`` is pycocotools' ``COCOeval`` with videos in place of images: its matching,
accumulation and summary are the same code line for line. So this module subclasses ``COCOeval``
and replaces only what differs, instead of keeping a second copy of the matcher:

* the IoU of two tracks is over the whole video, ``sum_t |d_t & g_t| / sum_t |d_t | g_t|``; a frame
  where only one side has a mask adds that mask's area to the union, a frame where neither has
  one adds nothing, and a pair with an empty union has IoU 0. Crowd tracks get this plain IoU
  too (``ytvoseval`` computes ``iscrowd`` and never passes it to the IoU);
* a track's area is the mean of its non-null, non-zero per-frame ``areas`` (ground truth: the
  file's ``areas``, or the mask areas when the file has none; results: mask areas), 0 when there
  are none; the area ranges are 128² and 256² (not COCO's 32²/96²), closed at both ends.

Everything else is COCOeval's: detections in score order (stable mergesort), at most 100 per
video and category, crowd ground truth ignored and matchable many times, 101-point interpolated
precision, -1 (returned here as ``None``) where a metric has no ground truth to be defined on.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from collections.abc import Iterable
from os import PathLike

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from instseg.evaluation.coco_eval import STAT_KEYS
from instseg.errors import InputError
from instseg.video.data.ytvis import load_ytvis_gt, load_ytvis_results, validate_ytvis_gt, validate_ytvis_results

AREA_RANGES = [[0.0, 1e5 ** 2], [0.0, 128.0 ** 2], [128.0 ** 2, 256.0 ** 2], [256.0 ** 2, 1e5 ** 2]]
AREA_LABELS = ["all", "small", "medium", "large"]
# OVIS: a frame's occlusion level as a number; a track's score is the mean of its top half of frames.
OCCLUSION_SCORES = {"none": 0.0, "slight": 0.25, "severe": 0.75}
OCCLUSION_BINS = {"light": (0.0, 0.25), "medium": (0.25, 0.5), "heavy": (0.5, 1.0)}


def _bytes_rle(rle: dict | None) -> dict | None:
    return None if rle is None else {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def mean_area(areas: Iterable) -> float:
    """ytvoseval's track area: mean of the truthy (non-null, non-zero) frame areas, else 0."""
    present = [a for a in areas if a]
    return float(np.array(present).mean()) if present else 0.0


def _frame_areas(masks: list[dict | None]) -> list:
    present = [m for m in masks if m is not None]
    areas = iter(mask_utils.area(present)) if present else iter(())
    return [None if m is None else next(areas) for m in masks]


def _tracks(gt: dict, results: list[dict]) -> tuple[list[dict], list[dict]]:
    """COCOeval-shaped records; ids 1..N because COCOeval reads id 0 as "unmatched"."""
    gts = []
    for k, ann in enumerate(gt["annotations"], start=1):
        masks = [_bytes_rle(m) for m in ann["segmentations"]]
        areas = _frame_areas(masks)
        gts.append({"id": k, "video_id": ann["video_id"], "category_id": ann["category_id"], "masks": masks,
                    "frame_areas": areas, "area": mean_area(ann.get("areas", areas)),
                    "iscrowd": int(ann["iscrowd"]), "ignore": int(ann["iscrowd"]), "source": ann})
    dts = []
    for k, res in enumerate(results, start=1):
        masks = [_bytes_rle(m) for m in res["segmentations"]]
        areas = _frame_areas(masks)
        dts.append({"id": k, "video_id": res["video_id"], "category_id": res["category_id"], "masks": masks,
                    "frame_areas": areas, "area": mean_area(areas), "score": float(res["score"]), "iscrowd": 0})
    return gts, dts


def sequence_ious(dts: list[dict], gts: list[dict]) -> np.ndarray:
    """(D, G) video-level mask IoU. Per-frame intersections are integers recovered exactly from
    pycocotools' crowd IoU (|d & g| / |d|), so the sums equal ytvoseval's merge-and-count ones."""
    inter = np.zeros((len(dts), len(gts)))
    union = np.zeros((len(dts), len(gts)))
    length = len(dts[0]["masks"]) if dts else len(gts[0]["masks"]) if gts else 0
    for t in range(length):
        d_idx = [i for i, d in enumerate(dts) if d["masks"][t] is not None]
        g_idx = [j for j, g in enumerate(gts) if g["masks"][t] is not None]
        d_area = np.array([float(dts[i]["frame_areas"][t]) for i in d_idx])
        g_area = np.array([float(gts[j]["frame_areas"][t]) for j in g_idx])
        union[d_idx, :] += d_area[:, None]
        union[:, g_idx] += g_area[None, :]
        if d_idx and g_idx:
            ratio = np.asarray(mask_utils.iou([dts[i]["masks"][t] for i in d_idx],
                                              [gts[j]["masks"][t] for j in g_idx], [1] * len(g_idx)))
            overlap = np.rint(ratio * d_area[:, None])
            inter[np.ix_(d_idx, g_idx)] += overlap
            union[np.ix_(d_idx, g_idx)] -= overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


class _VideoCOCOeval(COCOeval):
    """COCOeval over videos: ``imgIds`` holds video ids; tracks come prepared, IoUs may be shared."""

    def __init__(self, gts: list[dict], dts: list[dict], video_ids: list, category_ids: list,
                 iou_cache: dict | None = None):
        super().__init__(None, None, "segm")
        self._gt_tracks, self._dt_tracks = gts, dts
        self._iou_cache = {} if iou_cache is None else iou_cache
        self.params.imgIds = list(video_ids)
        self.params.catIds = list(category_ids)
        self.params.areaRng = [list(r) for r in AREA_RANGES]
        self.params.areaRngLbl = list(AREA_LABELS)

    def _prepare(self) -> None:
        self._gts, self._dts = defaultdict(list), defaultdict(list)
        for g in self._gt_tracks:  # copies: evaluateImg writes '_ignore' into them
            self._gts[g["video_id"], g["category_id"]].append(dict(g))
        for d in self._dt_tracks:
            self._dts[d["video_id"], d["category_id"]].append(dict(d))
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, imgId, catId):  # noqa: N802, N803 (COCOeval's names)
        key = (imgId, catId)
        if key not in self._iou_cache:
            gt, dt = self._gts[key], self._dts[key]
            if not gt and not dt:
                self._iou_cache[key] = []
            else:
                order = np.argsort([-d["score"] for d in dt], kind="mergesort")
                dt = [dt[i] for i in order[: self.params.maxDets[-1]]]
                self._iou_cache[key] = sequence_ious(dt, gt)
        return self._iou_cache[key]


def _inputs(gt: dict | str | PathLike, results: list | str | PathLike) -> tuple[dict, list[dict]]:
    gt = validate_ytvis_gt(gt) if isinstance(gt, dict) else load_ytvis_gt(gt)
    results = validate_ytvis_results(results, gt) if isinstance(results, list) else load_ytvis_results(results, gt)
    return gt, results


def _video_ids(gt: dict, video_ids: Iterable | None) -> list:
    known = [video["id"] for video in gt["videos"]]
    if video_ids is None:
        return known
    video_ids = list(video_ids)
    unknown = [v for v in video_ids if v not in set(known)]
    if unknown:
        raise InputError(f"video ids {unknown[:5]} are not in the ground truth", "<memory>", "video_ids")
    return video_ids


def _run(ev: _VideoCOCOeval, summarize: bool) -> _VideoCOCOeval:
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints every step
        ev.evaluate()
        ev.accumulate()
        if summarize:
            ev.summarize()
    return ev


def _fraction(value: float) -> float | None:
    return None if value < 0 else float(value)


def evaluate_vis(gt: dict | str | PathLike, results: list | str | PathLike, video_ids: Iterable | None = None) -> dict:
    """YouTube-VIS AP/AR (fractions; ``None`` where undefined) of ``results`` on ``gt`` (dicts or
    JSON paths), over all videos or ``video_ids``. An empty result list scores 0, not an error.
    Bad input raises :class:`~instseg.errors.InputError`; the caller's objects are not modified."""
    gt, results = _inputs(gt, results)
    gts, dts = _tracks(gt, results)
    ev = _run(_VideoCOCOeval(gts, dts, _video_ids(gt, video_ids), [c["id"] for c in gt["categories"]]), True)
    return {key: _fraction(value) for key, value in zip(STAT_KEYS, ev.stats, strict=True)}


def occlusion_score(levels: list[str | None]) -> float | None:
    """OVIS track occlusion: the mean of the highest ⌈n/2⌉ of its n labelled frames (None if none are)."""
    scores = sorted(OCCLUSION_SCORES[level] for level in levels if level is not None)
    if not scores:
        return None
    top = scores[-math.ceil(len(scores) / 2):]
    return sum(top) / len(top)


def _occlusion_scores(gts: list[dict]) -> list[float | None]:
    """Per ground-truth track; crowd tracks are ignored anyway and need no labels."""
    out = []
    for i, g in enumerate(gts):
        score = occlusion_score(g["source"].get("occlusion", []))
        if score is None and not g["iscrowd"]:
            ann = g["source"]
            raise InputError("AP by occlusion needs per-frame 'occlusion' labels; this track has none",
                             "<memory>", f"annotations[{i}] (id={ann['id']}, video_id={ann['video_id']})")
        out.append(score)
    return out


def ap_by_occlusion_vis(gt: dict | str | PathLike, results: list | str | PathLike) -> dict[str, dict]:
    """OVIS AP (IoU .5:.95, all areas, 100 detections) per occlusion bin: ground truth outside the
    bin is ignored, detections are scored in every bin (unmatched ones are false positives in each).
    Bins are closed at both ends, so a track scored exactly 0.25 or 0.5 counts in two bins."""
    gt, results = _inputs(gt, results)
    gts, dts = _tracks(gt, results)
    scores = _occlusion_scores(gts)
    video_ids = [video["id"] for video in gt["videos"]]
    category_ids = [c["id"] for c in gt["categories"]]
    cache: dict = {}
    out = {}
    for name, (lo, hi) in OCCLUSION_BINS.items():
        inside = [s is not None and lo <= s <= hi for s in scores]
        binned = [dict(g, ignore=int(g["iscrowd"] or not ok)) for g, ok in zip(gts, inside, strict=True)]
        ev = _VideoCOCOeval(binned, dts, video_ids, category_ids, cache)
        ev.params.areaRng, ev.params.areaRngLbl = [list(AREA_RANGES[0])], ["all"]
        precision = _run(ev, False).eval["precision"][:, :, :, 0, -1]
        defined = precision[precision > -1]
        out[name] = {"AP": float(defined.mean()) if defined.size else None,
                     "n_gt": sum(1 for g, ok in zip(gts, inside, strict=True) if ok and not g["iscrowd"])}
    return out
