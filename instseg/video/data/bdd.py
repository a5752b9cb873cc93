"""BDD100K segmentation tracking (MOTS) labels, Scalabel JSON, read into a YouTube-VIS-style dict.

Scalabel stores one record per frame (``name``, ``videoName``, ``frameIndex``, ``labels``), each
label an object in that frame (``id`` stable across the video, ``category``, ``attributes``,
``rle``). The video evaluators want one record per track, so labels are grouped by video and
``id`` and laid out over the video's frames (``null`` where the object is absent). As BDD100K's
own COCO conversion does, categories map onto the 8 evaluated classes (``van`` -> car, ...),
``other person``/``other vehicle``/``trailer`` become their class marked ignored, and a crowd or
ignored label makes the track ``iscrowd`` (it is then neither a hit nor a miss).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from instseg.data.coco_json import check_segmentation, read_json, segmentation_to_rle
from instseg.errors import InputError

CATEGORIES = ("pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
NAME_MAPPING = {"bike": "bicycle", "caravan": "car", "motor": "motorcycle", "person": "pedestrian", "van": "car"}
IGNORED_MAPPING = {"other person": "pedestrian", "other vehicle": "car", "trailer": "truck"}
IMAGE_SIZE = (720, 1280)  # BDD100K's frame size: the size of a video none of whose frames has a label


def _frames(path: Path) -> list[tuple[Path, int, dict]]:
    """(file, index in file, frame) for a Scalabel file (a list, or a dict with 'frames') or a folder of them."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise InputError("no .json label files in the folder", path)
    out = []
    for file in files:
        data = read_json(file)
        frames = data.get("frames") if isinstance(data, dict) else data
        if not isinstance(frames, list):
            raise InputError("a Scalabel label file must hold a list of frames (or an object with 'frames')", file)
        out += [(file, i, frame) for i, frame in enumerate(frames)]
    return out


def _frame_record(i: int, frame: Any) -> str:
    if not isinstance(frame, dict):
        return f"frames[{i}]"
    return f"frames[{i}] (name={frame.get('name')!r}, videoName={frame.get('videoName')!r})"


def _check_frame(file: Path, i: int, frame: Any) -> None:
    record = _frame_record(i, frame)
    if not isinstance(frame, dict):
        raise InputError("frame must be an object", file, record)
    for key, kind in (("name", str), ("videoName", str), ("frameIndex", int)):
        if not isinstance(frame.get(key), kind) or isinstance(frame.get(key), bool):
            raise InputError(f"frame needs '{key}' ({kind.__name__})", file, record)
    if not isinstance(frame.get("labels", []), list):
        raise InputError("'labels' must be a list", file, record)


def _category(label: dict, file: Path, record: str) -> tuple[int, bool]:
    """1-based class id (BDD100K's order) and whether the label is ignored."""
    name = NAME_MAPPING.get(label["category"], label["category"])
    ignored = name in IGNORED_MAPPING
    name = IGNORED_MAPPING.get(name, name)
    if name not in CATEGORIES:
        raise InputError(f"unknown category {label['category']!r}; BDD100K MOTS has {', '.join(CATEGORIES)}",
                         file, record)
    return CATEGORIES.index(name) + 1, ignored


def _label_rle(label: Any, file: Path, record: str) -> dict:
    if not isinstance(label, dict) or not isinstance(label.get("id"), (str, int)) or isinstance(label.get("id"), bool):
        raise InputError("label needs an 'id'", file, record)
    if not isinstance(label.get("category"), str):
        raise InputError("label needs a 'category' name", file, record)
    if "rle" not in label:
        raise InputError("label has no 'rle' mask", file, record)
    check_segmentation(label["rle"], file, record, "rle")
    if not isinstance(label["rle"], dict):
        raise InputError("'rle' must be an RLE dict {counts, size}", file, record)
    h, w = label["rle"]["size"]
    return segmentation_to_rle(label["rle"], h, w)


def load_bdd_seg_track(path: str | Path) -> dict:
    """A Scalabel seg_track file or folder -> ``{"videos", "annotations", "categories"}`` in the
    YouTube-VIS schema: videos by name, frames by ``frameIndex``, one annotation per label id."""
    path = Path(path)
    if not path.exists():
        raise InputError("BDD100K label file or folder not found", path)
    by_video: dict[str, list[tuple[int, Path, int, dict]]] = defaultdict(list)
    for file, i, frame in _frames(path):
        _check_frame(file, i, frame)
        by_video[frame["videoName"]].append((frame["frameIndex"], file, i, frame))
    videos, annotations = [], []
    for video_id, name in enumerate(sorted(by_video), start=1):
        frames = sorted(by_video[name], key=lambda f: f[0])
        seen_index: dict[int, str] = {}
        tracks: dict[Any, dict] = {}
        size = None
        for t, (index, file, i, frame) in enumerate(frames):
            record = _frame_record(i, frame)
            if index in seen_index:
                raise InputError(f"frameIndex {index} of video {name!r} already used by {seen_index[index]}",
                                 file, record)
            seen_index[index] = f"{file.name} {record}"
            in_frame = set()
            for label in frame.get("labels", []):
                label_record = f"{record}, label id={label.get('id') if isinstance(label, dict) else None!r}"
                rle = _label_rle(label, file, label_record)
                if size is None:
                    size = rle["size"]
                elif rle["size"] != size:
                    raise InputError(f"RLE size {rle['size']} differs from {size} earlier in video {name!r}",
                                     file, label_record)
                if label["id"] in in_frame:
                    raise InputError("label id appears twice in the frame", file, label_record)
                in_frame.add(label["id"])
                category, ignored = _category(label, file, label_record)
                attributes = label.get("attributes") or {}
                crowd = bool(attributes.get("crowd") or attributes.get("ignored") or ignored)
                track = tracks.setdefault(label["id"], {"category_id": category, "iscrowd": 0, "frames": {},
                                                        "first": (label["category"], record)})
                if track["category_id"] != category:
                    raise InputError(f"category {label['category']!r} here but {track['first'][0]!r} at "
                                     f"{track['first'][1]}: a track keeps one category", file, label_record)
                track["iscrowd"] = int(track["iscrowd"] or crowd)
                track["frames"][t] = rle
        h, w = size if size is not None else IMAGE_SIZE
        videos.append({"id": video_id, "name": name, "height": h, "width": w, "length": len(frames),
                       "file_names": [f"{name}/{frame['name']}" for _, _, _, frame in frames]})
        for label_id, track in tracks.items():
            segmentations = [track["frames"].get(t) for t in range(len(frames))]
            present = [s for s in segmentations if s is not None]
            areas = iter(mask_utils.area(present).tolist())
            boxes = iter(mask_utils.toBbox(present).tolist())
            annotations.append({"id": len(annotations) + 1, "video_id": video_id, "category_id": track["category_id"],
                                "iscrowd": track["iscrowd"], "track_id": label_id, "segmentations": segmentations,
                                "areas": [None if s is None else next(areas) for s in segmentations],
                                "bboxes": [None if s is None else next(boxes) for s in segmentations]})
    return {"videos": videos, "annotations": annotations,
            "categories": [{"id": k, "name": name} for k, name in enumerate(CATEGORIES, start=1)]}
