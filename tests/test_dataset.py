"""CocoInstanceDataset on hand-made COCO files: every target value is known in advance."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from instseg.data.amodal_formats import load_amodal
from instseg.data.coco_json import read_json
from instseg.data.dataset import CocoInstanceDataset, collate_fn
from instseg.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures"
COCO = FIXTURES / "coco_tiny.json"
RGB = np.arange(8 * 10 * 3, dtype=np.uint8).reshape(8, 10, 3)
GRAY = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
RGBA = np.dstack([np.full((6, 6), 10, np.uint8), np.full((6, 6), 20, np.uint8), np.full((6, 6), 30, np.uint8),
                  np.tile(np.array([0, 255, 128, 0, 1, 255], np.uint8), (6, 1))])
PALETTE_COLOURS = [(255, 0, 0), (0, 128, 255)]


def rect(h: int, w: int, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    Image.fromarray(GRAY).save(tmp_path / "gray.png")
    Image.fromarray(RGBA, "RGBA").save(tmp_path / "rgba.png")
    palette = Image.fromarray((np.arange(36).reshape(6, 6) % 2).astype(np.uint8), "P")
    palette.putpalette([v for colour in PALETTE_COLOURS for v in colour])
    palette.save(tmp_path / "palette.png", transparency=1)  # index 1 is transparent; its colour is kept
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "empty.png")
    for name, (h, w) in {"000001.png": (20, 30), "000002.png": (10, 10)}.items():  # KINS images
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / name)
    return tmp_path


def test_targets_by_hand(image_dir: Path) -> None:
    ds = CocoInstanceDataset(COCO, image_dir)
    assert len(ds) == 5 and ds.image_ids == [1, 2, 3, 4, 5]
    image, t = ds[0]
    assert image.shape == (3, 8, 10) and image.dtype == torch.float32
    torch.testing.assert_close(image, torch.from_numpy(RGB).permute(2, 0, 1).float() / 255)
    assert t["image_id"] == 1
    assert t["annotation_ids"].tolist() == [100, 101, 102]  # the crowd annotation 103 is dropped
    assert t["labels"].tolist() == [3, 1, 2] and t["labels"].dtype == torch.int64  # ids 90, 3, 7
    torch.testing.assert_close(t["boxes"], torch.tensor([[0.0, 0, 4, 4], [5, 2, 8, 6], [0, 6, 2, 8]]))
    assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (3, 8, 10)
    expected = [rect(8, 10, 0, 4, 0, 4), rect(8, 10, 5, 8, 2, 6), rect(8, 10, 0, 2, 6, 8)]  # polygon, RLE, RLE
    np.testing.assert_array_equal(t["masks"].numpy(), np.stack(expected))
    torch.testing.assert_close(t["area"], torch.tensor([16.0, 12, 4]))
    assert t["iscrowd"].tolist() == [0, 0, 0]
    assert not {"amodal_masks", "depth", "occluded_by", "occlusion_ratio"} & set(t)


def test_category_mapping_is_sorted_by_id(image_dir: Path) -> None:
    ds = CocoInstanceDataset(COCO, image_dir)
    assert ds.category_ids == [3, 7, 90]
    assert ds.category_id_to_label == {3: 1, 7: 2, 90: 3}
    assert ds.label_to_category_id == {1: 3, 2: 7, 3: 90}
    assert ds.num_classes == 4


def test_include_crowd_keeps_the_crowd_rle(image_dir: Path) -> None:
    _, t = CocoInstanceDataset(COCO, image_dir, include_crowd=True)[0]
    assert t["annotation_ids"].tolist() == [100, 101, 102, 103]
    assert t["iscrowd"].tolist() == [0, 0, 0, 1]
    np.testing.assert_array_equal(t["masks"][3].numpy(), rect(8, 10, 8, 10, 0, 8))


def test_image_without_annotations_has_empty_targets(image_dir: Path) -> None:
    image, t = CocoInstanceDataset(COCO, image_dir)[4]
    assert image.shape == (3, 5, 7)
    assert t["boxes"].shape == (0, 4) and t["boxes"].dtype == torch.float32
    assert t["masks"].shape == (0, 5, 7) and t["masks"].dtype == torch.uint8
    assert t["labels"].shape == (0,) and t["area"].shape == (0,) and t["annotation_ids"].shape == (0,)


def test_grayscale_rgba_and_palette_become_rgb(image_dir: Path) -> None:
    ds = CocoInstanceDataset(COCO, image_dir)
    gray, _ = ds[1]
    torch.testing.assert_close(gray, torch.from_numpy(GRAY).float().expand(3, 6, 6) / 255)
    rgba, _ = ds[2]  # alpha dropped: every pixel keeps (10, 20, 30), transparent or not
    torch.testing.assert_close(rgba, torch.tensor([10.0, 20, 30])[:, None, None].expand(3, 6, 6) / 255)
    palette, t = ds[3]
    index = np.arange(36).reshape(6, 6) % 2
    expected = np.array(PALETTE_COLOURS, np.float32)[index].transpose(2, 0, 1) / 255
    torch.testing.assert_close(palette, torch.from_numpy(expected))
    assert t["labels"].tolist() == [3]


def test_sixteen_bit_images_are_refused(image_dir: Path) -> None:
    Image.fromarray(np.full((6, 6), 1000, np.uint16)).save(image_dir / "gray.png")
    with pytest.raises(InputError, match=r"images\[1\] \(id=2\).*16-bit"):
        CocoInstanceDataset(COCO, image_dir)[1]


def test_missing_image(image_dir: Path) -> None:
    (image_dir / "gray.png").unlink()
    with pytest.raises(InputError, match=r"coco_tiny.json: images\[1\] \(id=2\): missing image file .*gray.png"):
        CocoInstanceDataset(COCO, image_dir)
    ds = CocoInstanceDataset(COCO, image_dir, check_images=False)
    ds[0]
    with pytest.raises(InputError, match=r"coco_tiny.json: images\[1\] \(id=2\): missing image file .*gray.png"):
        ds[1]


def test_image_size_must_match_the_record(image_dir: Path) -> None:
    Image.fromarray(np.zeros((7, 6), np.uint8)).save(image_dir / "gray.png")
    with pytest.raises(InputError, match=r"images\[1\] \(id=2\): image file .* is 6x7"):
        CocoInstanceDataset(COCO, image_dir)[1]


def test_bad_json_is_an_input_error(tmp_path: Path, image_dir: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(InputError, match="bad.json: malformed JSON"):
        CocoInstanceDataset(bad, image_dir)
    gt = read_json(COCO)
    gt["annotations"][0]["category_id"] = 5
    with pytest.raises(InputError, match=r"annotations\[0\].*unknown category_id 5"):
        CocoInstanceDataset(gt, image_dir)


def write_with(tmp_path: Path, change) -> Path:
    gt = read_json(COCO)
    change(gt)
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(gt))
    return path


def test_empty_mask_is_an_error_or_skipped(tmp_path: Path, image_dir: Path) -> None:
    def empty_102(gt: dict) -> None:
        gt["annotations"][2]["segmentation"] = {"size": [8, 10], "counts": [80]}

    path = write_with(tmp_path, empty_102)
    with pytest.raises(InputError, match=r"changed.json: annotations\[2\] \(id=102, image_id=1\): .*empty mask"):
        CocoInstanceDataset(path, image_dir)[0]
    ds = CocoInstanceDataset(path, image_dir, on_empty_mask="skip")
    with pytest.warns(UserWarning, match=r"id=102.*skipped"):
        _, t = ds[0]
    assert t["annotation_ids"].tolist() == [100, 101]
    with pytest.raises(ValueError):
        CocoInstanceDataset(path, image_dir, on_empty_mask="ignore")


def test_rle_of_another_size_is_an_error(tmp_path: Path, image_dir: Path) -> None:
    def resize(gt: dict) -> None:
        gt["annotations"][1]["segmentation"] = {"size": [10, 8], "counts": [42, 4, 4, 4, 4, 4, 18]}

    with pytest.raises(InputError, match=r"id=101.*10x8 \(h x w\), the image is 8x10"):
        CocoInstanceDataset(write_with(tmp_path, resize), image_dir)[0]


def test_transforms_and_collate(image_dir: Path) -> None:
    def flip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        width = image.shape[-1]
        target = dict(target, masks=target["masks"].flip(-1),
                      boxes=torch.stack([width - target["boxes"][:, 2], target["boxes"][:, 1],
                                         width - target["boxes"][:, 0], target["boxes"][:, 3]], dim=1))
        return image.flip(-1), target

    ds = CocoInstanceDataset(COCO, image_dir, transforms=flip)
    image, t = ds[0]
    torch.testing.assert_close(image, torch.from_numpy(RGB).permute(2, 0, 1).float().flip(-1) / 255)
    torch.testing.assert_close(t["boxes"][0], torch.tensor([6.0, 0, 10, 4]))
    images, targets = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_fn)))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 3
    assert [tuple(im.shape) for im in images] == [(3, 8, 10), (3, 6, 6), (3, 6, 6)]
    assert [t["image_id"] for t in targets] == [1, 2, 3]


def test_amodal_targets_from_converted_kins(image_dir: Path) -> None:
    ds = CocoInstanceDataset(load_amodal(FIXTURES / "kins_tiny.json"), image_dir)
    assert ds.category_ids == [1, 2, 4]
    _, t = ds[0]
    assert t["annotation_ids"].tolist() == [11, 12, 13]
    assert t["labels"].tolist() == [3, 3, 2]
    np.testing.assert_array_equal(t["amodal_masks"].numpy(), np.stack(
        [rect(20, 30, 0, 12, 0, 10), rect(20, 30, 8, 20, 4, 14), rect(20, 30, 24, 28, 2, 16)]))
    visible_12 = rect(20, 30, 8, 20, 4, 14) - rect(20, 30, 8, 12, 4, 10)
    np.testing.assert_array_equal(t["masks"][1].numpy(), visible_12)
    torch.testing.assert_close(t["amodal_boxes"], torch.tensor([[0.0, 0, 12, 10], [8, 4, 20, 14], [24, 2, 28, 16]]))
    assert t["depth"].tolist() == [1, 0, 1] and t["depth"].dtype == torch.int64
    torch.testing.assert_close(t["occlusion_ratio"], torch.tensor([0.0, 0.2, 0.0]))
    assert t["occluded_by"].tolist() == [[False, False, False], [True, False, False], [False, False, False]]
    _, t2 = ds[1]
    assert t2["occluded_by"].shape == (1, 1) and t2["amodal_masks"].shape == (1, 10, 10)


def test_occluded_by_only_links_annotations_in_the_target(image_dir: Path) -> None:
    gt = load_amodal(FIXTURES / "kins_tiny.json")
    gt["annotations"][0]["iscrowd"] = 1  # the occluder 11 leaves the target
    _, t = CocoInstanceDataset(gt, image_dir)[0]
    assert t["annotation_ids"].tolist() == [12, 13]
    assert not t["occluded_by"].any() and t["occluded_by"].shape == (2, 2)


def test_partial_occlusion_fields_are_left_out_with_a_warning(image_dir: Path) -> None:
    gt = copy.deepcopy(load_amodal(FIXTURES / "kins_tiny.json"))
    del gt["annotations"][3]["depth"]
    with pytest.warns(UserWarning, match="'depth' is in only 3 of 4 annotations"):
        ds = CocoInstanceDataset(gt, image_dir)
    _, t = ds[0]
    assert "depth" not in t and "amodal_masks" in t and "occluded_by" in t


def test_occluded_shapes_targets_are_consistent(smoke_dir: Path) -> None:
    ds = CocoInstanceDataset(smoke_dir / "annotations" / "val.json", smoke_dir / "images")
    assert set(ds.occlusion_keys) == {"amodal_masks", "occlusion_ratio", "depth", "occluded_by"}
    for index in range(4):
        image, t = ds[index]
        assert image.shape[0] == 3 and 0 <= image.min() and image.max() <= 1
        assert not (t["masks"].bool() & ~t["amodal_masks"].bool()).any(), "visible inside amodal"
        front = t["depth"][None, :] > t["depth"][:, None]
        assert not (t["occluded_by"] & ~front).any(), "occluders are in front"
        visible, amodal = t["masks"].sum((1, 2)).float(), t["amodal_masks"].sum((1, 2)).float()
        torch.testing.assert_close(t["occlusion_ratio"], 1 - visible / amodal, atol=1e-6, rtol=0)


def test_occluder_targets_of_occluded_shapes_come_from_annotated_occluders(smoke_dir: Path) -> None:
    """The dataset's amodal masks reach the depth rule on the training call path, so every pixel of
    an occluder target belongs to an object the benchmark lists in ``occluder_ids`` (the box-region
    fallback would also take closer objects that merely lie in the box)."""
    from instseg.experiments.frozen_heads import roi_targets
    from instseg.models.mask_heads.targets import project_masks_on_boxes

    ds = CocoInstanceDataset(smoke_dir / "annotations" / "val.json", smoke_dir / "images")
    checked = 0
    for index in range(len(ds)):
        _, t = ds[index]
        n = len(t["boxes"])
        if n == 0:
            continue
        rois, matched = t["boxes"], torch.arange(n)
        occluder = roi_targets(t, rois, matched, "auto", amodal=False)["occluder_mask"]
        annotated = (t["occluded_by"].float() @ t["masks"].reshape(n, -1).float()).reshape(t["masks"].shape) > 0
        allowed = project_masks_on_boxes(annotated[:, None], rois, matched, 28)[:, 0] > 0
        assert not (occluder & ~allowed).any(), f"image {t['image_id']}: an occluder outside occluder_ids"
        checked += int(occluder.any(dim=(1, 2)).sum())
    assert checked > 0, "some instance of the smoke val split has an occluder"


def test_box_and_area_come_from_the_mask_when_absent(image_dir: Path) -> None:
    gt = read_json(COCO)
    del gt["annotations"][1]["bbox"], gt["annotations"][1]["area"]
    _, t = CocoInstanceDataset(gt, image_dir)[0]
    torch.testing.assert_close(t["boxes"][1], torch.tensor([5.0, 2, 8, 6]))
    assert t["area"][1].item() == 12
