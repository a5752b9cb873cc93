"""MOTS metrics (HOTA, MOTSA/MOTSP/sMOTSA, IDF1) for any class ids, scored by TrackEval's own metric classes.

TrackEval's ``KittiMOTS`` dataset knows only car (1) and pedestrian (2) and reads class 10 as ignore
regions; OccludedShapes-VIS has ten classes with ids 1..10. So this module redoes that dataset's
preprocessing for arbitrary class ids and an explicit ``ignore_class`` (10 for KITTI-MOTS, None for a
benchmark without ignore regions), then hands the per-sequence dicts to ``trackeval.metrics.HOTA``,
``CLEAR`` and ``Identity`` and combines them with their own ``combine_sequences`` and
``combine_classes_class_averaged``. Values are therefore TrackEval's, not a re-implementation's.

The preprocessing, per sequence and class, as in TrackEval 1.3.0 ``KittiMOTS``:
similarity is mask IoU (pycocotools); a prediction that is not Hungarian-matched to a GT at IoU >= 0.5
is dropped (neither TP nor FP) when more than half of its area lies in the frame's union of ignore
regions; GT is never dropped (MOTS has no distractor classes); ids are then relabelled 0..n-1. The
matched-exemption only matters where a GT mask overlaps an ignore region (TrackEval's reader rejects
that; ``read_kitti_mots`` does not check it). CLEAR and Identity count a match at IoU >= 0.5
(TrackEval's threshold, not the strict > 0.5 of the MOTS paper; with non-overlapping masks the two
differ only at exactly 0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment
from trackeval.metrics import CLEAR, HOTA, Identity

from instseg.errors import InputError
from instseg.video.data.kitti_mots import IGNORE_CLASS, MotsRow
from instseg.video.evaluation.recovery import (
    EPS, IOU_THRESHOLD, class_frames, identity_recovery, read_mots_pair, sequence_length,
)


def _metrics() -> dict:
    quiet = {"THRESHOLD": IOU_THRESHOLD, "PRINT_CONFIG": False}
    return {"HOTA": HOTA(), "CLEAR": CLEAR(quiet), "Identity": Identity(quiet)}


def _ignore_regions(gt_rows: list[MotsRow], ignore_class: int | None, num_frames: int) -> list[dict | None]:
    parts: list[list[dict]] = [[] for _ in range(num_frames)]
    for row in gt_rows:
        if row.class_id == ignore_class:
            parts[row.frame].append(row.rle)
    return [mask_utils.merge(p, intersect=False) if p else None for p in parts]


def _relabel(ids_per_frame: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    unique = np.unique(np.concatenate(ids_per_frame)) if ids_per_frame else np.empty(0, int)
    return [np.searchsorted(unique, ids).astype(int) for ids in ids_per_frame], len(unique)


def _matched(iou: np.ndarray) -> np.ndarray:
    """Columns (predictions) of the max-IoU one-to-one matching at IoU >= 0.5."""
    if 0 in iou.shape:
        return np.empty(0, dtype=int)
    score = np.where(iou < IOU_THRESHOLD - EPS, -10000.0, iou)
    rows, cols = linear_sum_assignment(-score)
    return cols[score[rows, cols] > EPS]


def preprocess_sequence(seq: str, gt_rows: list[MotsRow], dt_rows: list[MotsRow], class_id: int,
                        ignore_class: int | None = IGNORE_CLASS) -> dict:
    """One sequence and class as the dict TrackEval's metrics take (see the module docstring for the rules)."""
    num_frames = sequence_length(seq, gt_rows, dt_rows)
    ignore = _ignore_regions(gt_rows, ignore_class, num_frames)
    gt_ids, dt_ids, sims = [], [], []
    for f, region in zip(class_frames(gt_rows, dt_rows, class_id, num_frames), ignore):
        drop = np.zeros(len(f.dt_ids), dtype=bool)
        if region is not None and len(f.dt_ids):
            drop = np.asarray(mask_utils.iou(f.dt_rles, [region], [True])).reshape(-1) > 0.5 + EPS
            drop[_matched(f.iou)] = False
        gt_ids.append(f.gt_ids)
        dt_ids.append(f.dt_ids[~drop])
        sims.append(f.iou[:, ~drop])
    gt_ids, num_gt_ids = _relabel(gt_ids)
    dt_ids, num_dt_ids = _relabel(dt_ids)
    return {
        "gt_ids": gt_ids, "tracker_ids": dt_ids, "similarity_scores": sims,
        "num_gt_dets": sum(map(len, gt_ids)), "num_tracker_dets": sum(map(len, dt_ids)),
        "num_gt_ids": num_gt_ids, "num_tracker_ids": num_dt_ids,
        "num_timesteps": num_frames, "seq": seq, "cls": class_id,
    }


def _summary(res: dict) -> dict:
    """TrackEval's headline numbers under their MOTS names; HOTA, DetA, AssA are means over the 19 alphas."""
    hota, clear, ident = res["HOTA"], res["CLEAR"], res["Identity"]
    out = {k: float(np.mean(hota[k])) for k in ("HOTA", "DetA", "AssA")}
    out.update(MOTSA=float(clear["MOTA"]), MOTSP=float(clear["MOTP"]), sMOTSA=float(clear["sMOTA"]),
               IDF1=float(ident["IDF1"]))
    out.update(IDSW=int(clear["IDSW"]), TP=int(clear["CLR_TP"]), FP=int(clear["CLR_FP"]), FN=int(clear["CLR_FN"]),
               IDTP=int(ident["IDTP"]), IDFP=int(ident["IDFP"]), IDFN=int(ident["IDFN"]))
    return out


def evaluate_mots_sequences(
    gt_seqs: Mapping[str, list[MotsRow]],
    dt_seqs: Mapping[str, list[MotsRow]],
    class_names: Mapping[int, str],
    ignore_class: int | None = IGNORE_CLASS,
    min_gap: int | None = None,
    grace: int = 3,
    ignore_empty_classes: bool = False,
    per_sequence: bool = False,
) -> dict:
    """MOTS metrics per class and their class average, on in-memory sequences (rows of ``read_kitti_mots``).

    Returns ``{"per_class": {name: M}, "mean": M}``; M holds HOTA, DetA, AssA, MOTSA, MOTSP, sMOTSA, IDF1
    (fractions) and the counts IDSW, TP, FP, FN, IDTP, IDFP, IDFN. ``mean`` is TrackEval's
    ``combine_classes_class_averaged`` (fractions averaged over classes, counts summed; a class with no
    GT and no prediction counts as 0 unless ``ignore_empty_classes``, TrackEval's own switch), i.e.
    BDD100K-style mMOTSA / mIDF1. GT rows of ``ignore_class`` are ignore regions. With ``min_gap``, adds
    ``"identity_recovery"`` (:func:`identity_recovery` over the same classes). With ``per_sequence``,
    adds ``"per_sequence": {seq: M}``, each sequence's own class average, from the same evaluations.
    """
    if not class_names:
        raise InputError("class_names is empty: nothing to evaluate")
    if ignore_class is not None and ignore_class in class_names:
        raise InputError(f"class {ignore_class} ('{class_names[ignore_class]}') is also the ignore class; "
                         "pass ignore_class=None (or another id) for a benchmark that uses it as a category")
    unknown = sorted(set(dt_seqs) - set(gt_seqs))
    if unknown:
        raise InputError(f"results for sequences not in the ground truth: {unknown}")
    metrics = _metrics()
    seq_res: dict[str, dict[str, dict]] = {}  # class name -> sequence -> metric -> TrackEval's result
    for class_id, name in class_names.items():
        seq_res[name] = {}
        for seq, gt_rows in sorted(gt_seqs.items()):
            data = preprocess_sequence(seq, gt_rows, dt_seqs.get(seq, []), class_id, ignore_class)
            seq_res[name][seq] = {m: metric.eval_sequence(data) for m, metric in metrics.items()}

    def class_mean(seqs: list[str]) -> tuple[dict, dict]:
        """(per class, class average) of TrackEval's results combined over ``seqs``."""
        per_class = {c: {m: metric.combine_sequences({s: res[s][m] for s in seqs}) for m, metric in metrics.items()}
                     for c, res in seq_res.items()}
        return per_class, {m: metric.combine_classes_class_averaged({c: r[m] for c, r in per_class.items()},
                                                                    ignore_empty_classes)
                           for m, metric in metrics.items()}

    per_class_res, mean = class_mean(sorted(gt_seqs))
    out = {"per_class": {c: _summary(r) for c, r in per_class_res.items()}, "mean": _summary(mean)}
    if per_sequence:
        out["per_sequence"] = {seq: _summary(class_mean([seq])[1]) for seq in sorted(gt_seqs)}
    if min_gap is not None:
        out["identity_recovery"] = identity_recovery(gt_seqs, dt_seqs, min_gap, grace, class_ids=list(class_names),
                                                     ignore_class=ignore_class)
    return out


def evaluate_mots(
    gt_dir: str | Path,
    dt_dir: str | Path,
    class_names: Mapping[int, str],
    ignore_class: int | None = IGNORE_CLASS,
    min_gap: int | None = None,
    grace: int = 3,
    ignore_empty_classes: bool = False,
) -> dict:
    """:func:`evaluate_mots_sequences` on folders of `<seq>.txt`; a missing result file is an empty one and a
    result file for a sequence absent from the ground truth is an InputError naming it."""
    gt_seqs, dt_seqs = read_mots_pair(gt_dir, dt_dir)
    return evaluate_mots_sequences(gt_seqs, dt_seqs, class_names, ignore_class, min_gap, grace, ignore_empty_classes)
