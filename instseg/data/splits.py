"""Category splits for partially supervised and few-shot segmentation, as data.

* COCO: the 20 PASCAL-VOC classes ("voc", raw COCO category ids) and the other 60 ("nonvoc").
* OccludedShapes: the ``split`` field of its categories ("A" / "B"); each half holds convex,
  annular, armed and notched outlines (the ``supercategory``), so structural commonalities cross
  the split while every category has its own outline, and colour and texture are drawn per image
  for every category alike (see ``instseg.data.occluded_shapes.CATEGORIES``).

Few-shot sampling (:func:`few_shot_annotation_ids`) is deterministic: per category, the
non-crowd annotation ids sorted, shuffled by a generator seeded with (seed, category id), and the
first ``shots`` kept, so adding a category or changing another's annotations leaves the draw of
every other category unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from instseg.errors import InputError

COCO_VOC_CATEGORY_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72)


def category_split(categories: Sequence[dict], base: str) -> tuple[list[int], list[int]]:
    """(base ids, novel ids) when ``base`` names the mask-annotated half: "voc" or "nonvoc"
    (COCO ids), or a value of the categories' ``split`` field ("A", "B"); "all" is the oracle
    (every category is base, none novel)."""
    ids = sorted(c["id"] for c in categories)
    if base == "all":
        return ids, []
    if base in ("voc", "nonvoc"):
        missing = sorted(set(COCO_VOC_CATEGORY_IDS) - set(ids))
        if missing:
            raise InputError(f"the voc/non-voc split needs COCO's category ids; missing {missing[:5]}")
        voc = [i for i in ids if i in COCO_VOC_CATEGORY_IDS]
        other = [i for i in ids if i not in COCO_VOC_CATEGORY_IDS]
        return (voc, other) if base == "voc" else (other, voc)
    values = sorted({str(c["split"]) for c in categories if "split" in c})
    if base not in values:
        raise InputError(f"unknown split {base!r}: use all, voc, nonvoc or a categories 'split' value "
                         f"({', '.join(values) or 'none in this data'})")
    chosen = [c["id"] for c in categories if str(c.get("split")) == base]
    return sorted(chosen), [i for i in ids if i not in chosen]


def parse_mask_categories(spec: str, categories: Sequence[dict]) -> list[int]:
    """The category ids whose masks train, from a command-line spec: "all", "none", a split name
    (see :func:`category_split`), or comma-separated category ids."""
    spec = spec.strip()
    if spec == "none":
        return []
    if spec.replace(",", "").replace(" ", "").isdigit():
        ids = sorted({int(part) for part in spec.split(",") if part.strip()})
        unknown = sorted(set(ids) - {c["id"] for c in categories})
        if unknown:
            raise InputError(f"--mask-categories: ids {unknown} are not categories of the training data")
        return ids
    return category_split(categories, spec)[0]


def few_shot_annotation_ids(gt: dict, category_ids: Iterable[int], shots: int, seed: int) -> list[int]:
    """Ids of ``shots`` annotated instances per category of ``category_ids`` (see module docstring);
    fails, naming the category, when one has fewer."""
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    by_category: dict[int, list[int]] = defaultdict(list)
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            by_category[ann["category_id"]].append(ann["id"])
    chosen = []
    for category in sorted(set(category_ids)):
        pool = sorted(by_category.get(category, []))
        if len(pool) < shots:
            raise InputError(f"category {category} has {len(pool)} annotated instances, fewer than {shots} shots")
        order = np.random.default_rng([seed, category]).permutation(len(pool))
        chosen += [pool[i] for i in order[:shots]]
    return sorted(chosen)
