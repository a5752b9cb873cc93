"""COCO-style evaluation: AP/AR (visible or amodal, all images or a subset), per category, per occlusion bin.

faster-coco-eval is the default backend; pycocotools, the reference, gives the same numbers.
Video-inpainting metrics live in ``instseg.evaluation.inpainting`` and ``instseg.evaluation.lpips``
(imported from there, so COCO evaluation never loads LPIPS weights).
"""

from instseg.evaluation.backends import BACKENDS
from instseg.evaluation.breakdown import DEFAULT_BINS, ap_by_occlusion, per_category_ap
from instseg.evaluation.coco_eval import STAT_KEYS, evaluate

__all__ = ["BACKENDS", "DEFAULT_BINS", "STAT_KEYS", "ap_by_occlusion", "evaluate", "per_category_ap"]
