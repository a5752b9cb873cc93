"""Read and check YouTube-VIS JSON (2019, 2021 and OVIS share the schema) before anything trusts it.

A video annotation is a track: one entry per frame in ``segmentations``, ``bboxes``, ``areas``
(``null`` where the object is absent). The official evaluator zips those lists with the frames
and silently truncates or misaligns when a length is off, so every per-frame list is checked
against the video's ``length`` here, and every error names the video, the annotation and the
frame. Our benchmark adds amodal masks and per-frame occlusion; they are checked the same way.
Masks come back as compressed RLE with str counts, whatever form (polygon, uncompressed RLE) they
arrived in, so the evaluators see one representation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from instseg.data.coco_json import check_bbox, check_segmentation, read_json, segmentation_to_rle
from instseg.engine.checkpoint import atomic_write
from instseg.errors import InputError

MASK_LISTS = ("segmentations", "amodal_segmentations")
BOX_LISTS = ("bboxes", "amodal_bboxes")
NUMBER_LISTS = ("areas", "amodal_areas", "occlusion_ratios", "depths")
SIGNED_LISTS = frozenset({"depths"})  # a depth is a position along the view axis: any sign
# OVIS spells the levels out; both spellings are read, ours is kept.
OCCLUSION_LABELS = {"none": "none", "slight": "slight", "severe": "severe",
                    "no_occlusion": "none", "slight_occlusion": "slight", "severe_occlusion": "severe"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_list(item: dict, key: str, length: int, path: Path, record: str) -> list:
    values = item[key]
    if not isinstance(values, list):
        raise InputError(f"'{key}' must be a list with one entry per frame", path, record)
    if len(values) != length:
        raise InputError(f"'{key}' has {len(values)} entries but the video has {length} frames", path, record)
    return values


def normalise_masks(item: dict, key: str, video: dict, path: Path, record: str) -> list[dict | None]:
    """Per-frame masks of ``item[key]`` as compressed RLE (None where absent), sizes checked against the video."""
    h, w = video["height"], video["width"]
    out: list[dict | None] = []
    for t, seg in enumerate(_check_list(item, key, video["length"], path, record)):
        if seg is None:
            out.append(None)
            continue
        frame_record = f"{record}, frame {t}"
        check_segmentation(seg, path, frame_record, key)
        if isinstance(seg, dict) and list(seg["size"]) != [h, w]:
            raise InputError(f"'{key}' RLE size {seg['size']} differs from the video size [{h}, {w}]",
                             path, frame_record)
        try:
            out.append(segmentation_to_rle(seg, h, w))
        except (TypeError, ValueError, UnicodeError) as exc:
            raise InputError(f"'{key}' cannot be read as a mask ({exc})", path, frame_record) from None
    return out


def _check_videos(data: dict, path: Path) -> dict[Any, dict]:
    videos: dict[Any, dict] = {}
    for i, video in enumerate(data["videos"]):
        if not isinstance(video, dict) or "id" not in video:
            raise InputError("video record needs an 'id'", path, f"videos[{i}]")
        record = f"videos[{i}] (id={video['id']})"
        if video["id"] in videos:
            raise InputError("duplicate video id", path, record)
        video = dict(video)
        names = video.get("file_names")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise InputError("'file_names' must be a list of str", path, record)
        if "length" not in video and names is not None:
            video["length"] = len(names)
        for key in ("height", "width", "length"):
            if not isinstance(video.get(key), int) or isinstance(video.get(key), bool) or video[key] <= 0:
                raise InputError(f"video '{key}' must be a positive integer", path, record)
        if names is not None and len(names) != video["length"]:
            raise InputError(f"'file_names' has {len(names)} entries but 'length' is {video['length']}", path, record)
        videos[video["id"]] = video
    return videos


def _check_annotation(ann: dict, video: dict, path: Path, record: str) -> dict:
    """A normalised copy of one ground-truth track."""
    ann = dict(ann)
    ann.setdefault("iscrowd", 0)
    if ann["iscrowd"] not in (0, 1):
        raise InputError(f"'iscrowd' must be 0 or 1, got {ann['iscrowd']!r}", path, record)
    if "segmentations" not in ann:
        raise InputError("annotation has no 'segmentations'", path, record)
    for key in MASK_LISTS:
        if key in ann:
            ann[key] = normalise_masks(ann, key, video, path, record)
    for key in BOX_LISTS:
        if key in ann:
            for t, box in enumerate(_check_list(ann, key, video["length"], path, record)):
                if box is not None:
                    check_bbox(box, path, f"{record}, frame {t}", key)
    for key in NUMBER_LISTS:
        if key in ann:
            for t, value in enumerate(_check_list(ann, key, video["length"], path, record)):
                if value is not None and not (_is_number(value) and (key in SIGNED_LISTS or value >= 0)):
                    bound = "" if key in SIGNED_LISTS else " >= 0"
                    raise InputError(f"'{key}' must be a finite number{bound} or null, got {value!r}",
                                     path, f"{record}, frame {t}")
    if "occlusion" in ann:
        levels = _check_list(ann, "occlusion", video["length"], path, record)
        for t, level in enumerate(levels):
            if level is not None and level not in OCCLUSION_LABELS:
                raise InputError(f"'occlusion' must be one of {sorted(OCCLUSION_LABELS)} or null, got {level!r}",
                                 path, f"{record}, frame {t}")
        ann["occlusion"] = [None if level is None else OCCLUSION_LABELS[level] for level in levels]
    return ann


def validate_ytvis_gt(data: Any, path: str | Path = "<memory>") -> dict:
    """Check a YouTube-VIS ground-truth dict; return a copy with masks as compressed RLE."""
    path = Path(path)
    if not isinstance(data, dict):
        raise InputError("a YouTube-VIS ground-truth file must hold a JSON object", path)
    for key in ("videos", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"missing or non-list top-level key '{key}'", path)
    videos = _check_videos(data, path)
    category_ids = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            raise InputError("category record needs an 'id'", path, f"categories[{i}]")
        category_ids.add(cat["id"])
    annotations, ann_ids = [], set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise InputError("annotation must be an object", path, f"annotations[{i}]")
        record = f"annotations[{i}] (id={ann.get('id')}, video_id={ann.get('video_id')})"
        if "id" not in ann:
            raise InputError("annotation has no 'id'", path, record)
        if ann["id"] in ann_ids:
            raise InputError("duplicate annotation id", path, record)
        ann_ids.add(ann["id"])
        if ann.get("video_id") not in videos:
            raise InputError("annotation references an unknown video_id", path, record)
        if ann.get("category_id") not in category_ids:
            raise InputError(f"annotation references an unknown category_id {ann.get('category_id')!r}", path, record)
        annotations.append(_check_annotation(ann, videos[ann["video_id"]], path, record))
    return dict(data, videos=list(videos.values()), annotations=annotations)


def load_ytvis_gt(path: str | Path) -> dict:
    """Read and check a YouTube-VIS ground-truth file."""
    return validate_ytvis_gt(read_json(path), path)


def validate_ytvis_results(results: Any, gt: dict, path: str | Path = "<memory>") -> list[dict]:
    """Check a YouTube-VIS results list against its (validated) ground truth; return normalised copies."""
    path = Path(path)
    if not isinstance(results, list):
        raise InputError("a YouTube-VIS results file must hold a JSON list of tracks", path)
    videos = {video["id"]: video for video in gt["videos"]}
    category_ids = {cat["id"] for cat in gt["categories"]}
    out = []
    for i, res in enumerate(results):
        if not isinstance(res, dict):
            raise InputError("result must be an object", path, f"results[{i}]")
        record = f"results[{i}] (video_id={res.get('video_id')})"
        if res.get("video_id") not in videos:
            raise InputError(f"result for video {res.get('video_id')!r}, which is not in the ground truth",
                             path, record)
        if res.get("category_id") not in category_ids:
            raise InputError(f"result references an unknown category_id {res.get('category_id')!r}", path, record)
        if not _is_number(res.get("score")):
            raise InputError(f"result needs a finite numeric 'score', got {res.get('score')!r}", path, record)
        if "segmentations" not in res:
            raise InputError("result has no 'segmentations'", path, record)
        out.append(dict(res, segmentations=normalise_masks(res, "segmentations", videos[res["video_id"]],
                                                           path, record)))
    return out


def load_ytvis_results(path: str | Path, gt: dict) -> list[dict]:
    """Read and check a YouTube-VIS results file."""
    return validate_ytvis_results(read_json(path), gt, path)


def check_frames_exist(gt: dict, frames_dir: str | Path, path: str | Path = "<memory>") -> None:
    """Fail on the first video frame listed in ``file_names`` that is not under ``frames_dir``."""
    frames_dir = Path(frames_dir)
    for i, video in enumerate(gt["videos"]):
        record = f"videos[{i}] (id={video['id']})"
        if not video.get("file_names"):
            raise InputError("video record has no 'file_names'", path, record)
        for t, name in enumerate(video["file_names"]):
            if not (frames_dir / name).is_file():
                raise InputError(f"missing frame file {frames_dir / name}", path, f"{record}, frame {t}")


def write_ytvis_results(path: str | Path, results: list[dict]) -> None:
    """Write a results list as JSON atomically (a crash leaves the old file or the new one)."""
    text = json.dumps(results).encode("utf-8")
    atomic_write(path, lambda f: f.write(text))
