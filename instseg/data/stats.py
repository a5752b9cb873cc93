"""Statistics of an occlusion benchmark split, computed from its COCO JSON alone."""

from __future__ import annotations

from collections import Counter
from typing import Any

import cv2
import numpy as np

from instseg.data.coco_json import segmentation_to_mask
from instseg.data.occlusion import coco_occ_image_ids

OCCLUSION_HIST_EDGES = (0.0, 1e-9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def split_statistics(gt: dict, coco_occ_threshold: float = 0.2, min_piece_pixels: int = 5) -> dict[str, Any]:
    """Counts, occlusion distribution, same-category overlap rate and the COCO-OCC share.

    ``occluded_share`` counts instances with any occlusion, ``occluded_over_0.1_share`` those that
    lose more than 10% of their area; ``occlusion_ratio_mean`` averages over every instance and
    ``occlusion_ratio_mean_occluded`` over occluded ones. ``crowded_share``: share of images the
    generator drew as crowded scenes (OccludedShapes only: images with a ``scene`` field).

    ``same_category_overlap_rate``: among (occludee, occluder) pairs, the share whose two objects
    share a category — the hard case for single-layer mask heads. ``split_visible_rate``: share of
    occluded instances whose visible mask falls into two or more disjoint pieces of at least ``min_piece_pixels``
    pixels (slivers along an occluder's edge are not counted).
    """
    anns = [a for a in gt["annotations"] if not a.get("iscrowd", 0)]
    images = {im["id"]: im for im in gt["images"]}
    per_image = Counter(a["image_id"] for a in anns)
    counts = np.array([per_image.get(i, 0) for i in images], dtype=float)
    stats: dict[str, Any] = {
        "images": len(images),
        "instances": len(anns),
        "instances_per_image_mean": float(counts.mean()) if len(counts) else 0.0,
        "instances_per_image_max": int(counts.max()) if len(counts) else 0,
        "categories": len(gt["categories"]),
    }
    occ_ids = coco_occ_image_ids(gt, threshold=coco_occ_threshold)
    stats["coco_occ_images"] = len(occ_ids)
    stats["coco_occ_share"] = len(occ_ids) / max(len(images), 1)
    if images and all("scene" in im for im in images.values()):
        stats["crowded_share"] = float(np.mean([im["scene"] == "crowded" for im in images.values()]))
    if anns and "occlusion_ratio" in anns[0]:
        ratios = np.array([a["occlusion_ratio"] for a in anns], dtype=float)
        occluded = ratios > 0
        stats["occluded_share"] = float(occluded.mean())
        stats["occluded_over_0.1_share"] = float((ratios > 0.1).mean())
        stats["occlusion_ratio_mean"] = float(ratios.mean())
        stats["occlusion_ratio_mean_occluded"] = float(ratios[occluded].mean()) if occluded.any() else 0.0
        hist, _ = np.histogram(ratios, bins=OCCLUSION_HIST_EDGES)
        stats["occlusion_histogram"] = {"edges": list(OCCLUSION_HIST_EDGES), "counts": hist.tolist()}
        category = {a["id"]: a["category_id"] for a in anns}
        pairs = [(category[a["id"]], category[o]) for a in anns for o in a.get("occluder_ids", []) if o in category]
        stats["occluder_pairs"] = len(pairs)
        stats["same_category_overlap_rate"] = float(np.mean([p == q for p, q in pairs])) if pairs else 0.0
        pieces = []
        for a in anns:
            if a["occlusion_ratio"] > 0:
                im = images[a["image_id"]]
                mask = segmentation_to_mask(a["segmentation"], im["height"], im["width"])
                _, _, comp_stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
                pieces.append(int((comp_stats[1:, cv2.CC_STAT_AREA] >= min_piece_pixels).sum()))
        stats["split_visible_rate"] = float(np.mean(np.array(pieces) >= 2)) if pieces else 0.0
    return stats


def subset_statistics(full: dict, subset: dict, full_name: str = "val",
                      subset_name: str = "val_occ") -> list[dict[str, Any]]:
    """One row each for a split and a subset of it (e.g. ``val`` and ``val_occ``): images, their
    share of the split, instances per image and occlusion, so one can see that the subset is the
    hard minority COCO-OCC is within COCO val (20% of the images, more occlusion)."""
    n_full = max(len(full["images"]), 1)
    rows = []
    for name, gt in ((full_name, full), (subset_name, subset)):
        anns = [a for a in gt["annotations"] if not a.get("iscrowd", 0)]
        ratios = np.array([a["occlusion_ratio"] for a in anns], dtype=float)
        rows.append({
            "split": name, "images": len(gt["images"]), "share_of_" + full_name: len(gt["images"]) / n_full,
            "instances_per_image": len(anns) / max(len(gt["images"]), 1),
            "occlusion_ratio_mean": float(ratios.mean()) if len(ratios) else 0.0,
            "occluded_over_0.1_share": float((ratios > 0.1).mean()) if len(ratios) else 0.0,
        })
    return rows
