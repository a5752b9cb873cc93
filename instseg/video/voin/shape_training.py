"""Training and evaluating the shape-completion model on VOI samples, through the engine's Trainer
(exact resume, NaN guard, the validation-loss plateau check).

A sample gives a clip of visible masks, the target's class and its amodal masks (the supervision,
which VOI samples carry exactly). The model sees each clip **cropped** to a square around the union
of its visible masks over the clip (enlarged by ``context`` on every side, as a ROI would be) and
resized to ``crop_size``: the objects are small in the frame, and a crop keeps the cost per clip
fixed and the object at a similar scale across clips. Predictions are pasted back into the frame
for scoring, so the metrics are on full-resolution masks; ``crop_oracle`` in :func:`evaluate_shape`
(the true amodal masks through the same crop and paste) shows what the crop alone costs.

Which clips iteration ``i`` sees and how they are flipped is a pure function of the seed and ``i``.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.data.coco_json import read_json
from instseg.engine import InfiniteBatchSampler, TrainConfig, derive_seed
from instseg.engine.plateau import PlateauCheck
from instseg.engine.trainer import Trainer
from instseg.engine.validation import ValidationLoss
from instseg.errors import InputError
from instseg.video.voin.data import VoiSample, iter_samples
from instseg.video.voin.params import voin_config
from instseg.video.voin.shape import ShapeCompletion, ShapeConfig, shape_loss
from instseg.video.voin.shape_baselines import BASELINES
from instseg.video.voin.shape_metrics import pool_scores, shape_scores

Box = tuple[int, int, int]  # y0, x0, side: a square in frame pixels (may reach past the frame)
Batch = tuple[Tensor, Tensor, Tensor]  # visible (B, T, S, S), labels (B,), amodal (B, T, S, S)


@dataclass(frozen=True)
class ShapeClip:
    """What shape completion needs of one VOI sample: masks (T, H, W) bool and the target's class."""

    visible: np.ndarray
    amodal: np.ndarray
    occluded: np.ndarray
    label: int
    name: str

    def __post_init__(self) -> None:
        shapes = {k: np.shape(getattr(self, k)) for k in ("visible", "amodal", "occluded")}
        if len(set(shapes.values())) != 1 or len(shapes["visible"]) != 3:
            raise InputError(f"masks must be (T, H, W) of one shape, got {shapes}", record=self.name)


def clip_from_sample(sample: VoiSample, label: int, name: str) -> ShapeClip:
    return ShapeClip(sample.visible.astype(bool), sample.amodal.astype(bool), sample.occluded.astype(bool),
                     int(label), name)


def track_categories(annotation_path: str | Path) -> dict[tuple[int, int], int]:
    """``{(video_id, track_id): category_id}`` of an OccludedShapes-VIS annotation file."""
    data = read_json(Path(annotation_path))
    return {(int(a["video_id"]), int(a["track_id"])): int(a["category_id"]) for a in data["annotations"]}


def load_clips(index_path: str | Path, annotation_path: str | Path, frames_root: str | Path | None = None
               ) -> list[ShapeClip]:
    """The clips of a VOI split (``index.json``), classes looked up in the annotation file it was built from."""
    categories = track_categories(annotation_path)
    clips = []
    for entry, sample in iter_samples(index_path, frames_root):
        key = (int(entry["video_id"]), int(entry["track_id"]))
        if key not in categories:
            raise InputError(f"video {key[0]} track {key[1]} is not in {annotation_path}", index_path, entry["file"])
        clips.append(clip_from_sample(sample, categories[key], entry["file"]))
    return clips


@dataclass(frozen=True)
class ShapeTraining:
    """Crop and schedule of a shape-completion run (cpu defaults)."""

    iters: int = 300
    clips_per_batch: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    crop_size: int = 48  # a multiple of 4 * max(patch_sizes) wastes no padding
    context: float = 0.25  # the crop's margin on each side, as a fraction of the visible union's larger side
    invisible_weight: float = 0.0  # shape_loss's extra term (0: amodal BCE only)
    augment: bool = True  # random flips, transposes and time reversal of a clip
    val_clips: int = 32

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ShapeTraining:
        return voin_config(cls, values, "voin.shape_training")

    def __post_init__(self) -> None:
        if self.iters < 1 or self.clips_per_batch < 1 or self.crop_size < 8 or self.context < 0 or self.val_clips < 1:
            raise InputError("need iters, clips_per_batch, val_clips >= 1, crop_size >= 8 and context >= 0",
                             record="voin.shape_training")

    def engine_config(self, seed: int) -> TrainConfig:
        """AdamW with a 10% warmup and one 10x decay at 70%: the plateau check reads both phases."""
        decay = int(0.7 * self.iters)
        return TrainConfig(max_iters=self.iters, optimizer="adamw", lr=self.lr, weight_decay=self.weight_decay,
                           batch_size=self.clips_per_batch, warmup_iters=min(100, self.iters // 10),
                           lr_steps=(decay,) if decay else (), grad_clip=self.grad_clip, seed=seed,
                           checkpoint_every=max(self.iters, 1))


def clip_box(visible: np.ndarray, context: float) -> Box:
    """The square crop of a clip: centred on the bounding box of its visible masks' union, side =
    that box's larger side times ``1 + 2 context`` (at least 8 px); the whole frame if nothing is visible."""
    if visible.ndim != 3:
        raise InputError(f"visible masks must be (T, H, W), got shape {visible.shape}", record="crop")
    union = visible.any(0)
    h, w = union.shape
    if not union.any():
        return 0, 0, max(h, w)
    ys, xs = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
    side = max(int(np.ceil(max(ys[-1] - ys[0] + 1, xs[-1] - xs[0] + 1) * (1 + 2 * context))), 8)
    cy, cx = (ys[0] + ys[-1] + 1) / 2, (xs[0] + xs[-1] + 1) / 2
    return int(round(cy - side / 2)), int(round(cx - side / 2)), side


def crop_masks(masks: np.ndarray | Tensor, box: Box, size: int) -> Tensor:
    """(T, H, W) masks -> (T, size, size) float in [0, 1]: the box (zero outside the frame), resized
    with antialiased bilinear interpolation."""
    m = torch.as_tensor(np.asarray(masks), dtype=torch.float32)
    y0, x0, side = box
    h, w = m.shape[1:]
    top, left = max(-y0, 0), max(-x0, 0)
    bottom, right = max(y0 + side - h, 0), max(x0 + side - w, 0)
    m = F.pad(m, (left, right, top, bottom))[:, y0 + top:y0 + top + side, x0 + left:x0 + left + side]
    return F.interpolate(m[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def paste_logits(logits: Tensor, box: Box, frame: tuple[int, int], outside: float = -20.0) -> Tensor:
    """(T, S, S) crop logits -> (T, H, W) frame logits: resized to the box, ``outside`` elsewhere."""
    y0, x0, side = box
    h, w = frame
    up = F.interpolate(logits[None].float(), size=(side, side), mode="bilinear", align_corners=False)[0]
    canvas = torch.full((logits.shape[0], h, w), outside)
    ys, xs = slice(max(y0, 0), min(y0 + side, h)), slice(max(x0, 0), min(x0 + side, w))
    canvas[:, ys, xs] = up[:, ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return canvas


@dataclass
class CroppedClips:
    """A split's clips cropped for the model: ``visible``/``amodal`` (N, T, S, S), ``labels`` (N,)."""

    visible: Tensor
    amodal: Tensor
    labels: Tensor
    boxes: list[Box]


def crop_visible(visible: Sequence[np.ndarray], size: int, context: float, record: str = "shape completion"
                 ) -> tuple[Tensor, list[Box]]:
    """Clips of visible masks (T, H, W), all of one length, -> (N, T, size, size) crops and their boxes."""
    if not len(visible):
        raise InputError("no clips to crop", record=record)
    lengths = {np.shape(v)[0] for v in visible}
    if len(lengths) != 1:
        raise InputError(f"clips cropped together must have one length, got {sorted(lengths)}", record=record)
    boxes = [clip_box(np.asarray(v), context) for v in visible]
    return torch.stack([crop_masks(v, b, size) for v, b in zip(visible, boxes)]), boxes


def crop_clips(clips: Sequence[ShapeClip], size: int, context: float) -> CroppedClips:
    vis, boxes = crop_visible([c.visible for c in clips], size, context, clips[0].name if clips else "shape completion")
    amodal = torch.stack([crop_masks(c.amodal, b, size) for c, b in zip(clips, boxes)])
    return CroppedClips(vis, amodal, torch.tensor([c.label for c in clips]), boxes)


def augment(x: Tensor, code: int) -> Tensor:
    """One of 16 symmetries of a (T, S, S) clip: bit 0 flips x, bit 1 flips y, bit 2 transposes,
    bit 3 reverses time (the shapes' classes are closed under all of them)."""
    if code & 1:
        x = x.flip(-1)
    if code & 2:
        x = x.flip(-2)
    if code & 4:
        x = x.transpose(-1, -2)
    if code & 8:
        x = x.flip(0)
    return x


class ClipBatches:
    """The engine's batch source: iteration ``i`` gets ``per_batch`` clips (an epoch-wise permutation),
    each transformed by :func:`augment` with a code drawn from ``derive_seed(seed, i, k)``."""

    def __init__(self, data: CroppedClips, per_batch: int, seed: int, augment: bool = True) -> None:
        self.data, self.seed, self.augment = data, seed, augment
        self.sampler = InfiniteBatchSampler(len(data.labels), per_batch, seed)

    def batch(self, iteration: int) -> Batch:
        vis, amodal = [], []
        idx = self.sampler.global_batch(iteration)
        for k, i in enumerate(idx):
            code = int(np.random.default_rng(derive_seed(self.seed, iteration, k)).integers(16)) if self.augment else 0
            vis.append(augment(self.data.visible[i], code))
            amodal.append(augment(self.data.amodal[i], code))
        return torch.stack(vis), self.data.labels[idx], torch.stack(amodal)

    def __call__(self, start: int) -> Iterator[Batch]:
        for iteration in itertools.count(start):
            yield self.batch(iteration)


def clip_loss(model: nn.Module, batch: Batch, invisible_weight: float = 0.0) -> dict[str, Tensor]:
    """The engine's ``loss_fn``: :func:`shape_loss` of the model's logits on a batch."""
    visible, labels, amodal = batch
    return shape_loss(model(visible, labels), amodal, visible, invisible_weight)


def fixed_batches(data: CroppedClips, count: int, per_batch: int = 8) -> list[Batch]:
    """``count`` clips spread evenly over ``data``, unaugmented, ``per_batch`` at a time: the validation batches."""
    n = len(data.labels)
    picks = np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int))
    return [(data.visible[p], data.labels[p], data.amodal[p]) for p in
            (torch.as_tensor(picks[s:s + per_batch]) for s in range(0, len(picks), per_batch))]


@dataclass
class ShapeRun:
    """A trained model and what its training measured."""

    model: ShapeCompletion
    seconds: float
    sec_per_iter: float
    plateau: PlateauCheck
    val_curve: list[tuple[int, float]]
    final_loss: dict[str, float]


def train_shape(setup: ShapeTraining, model_cfg: ShapeConfig, train: Sequence[ShapeClip], val: Sequence[ShapeClip],
                seed: int, out_dir: str | Path | None = None, resume: bool = False) -> ShapeRun:
    """A fresh model (initialised from ``seed``) trained on ``train``, its validation loss measured on
    fixed clips of ``val``. With ``out_dir`` the run checkpoints there and can ``resume``."""
    torch.manual_seed(derive_seed(seed, 0x5A9E))
    model = ShapeCompletion(model_cfg)
    config = setup.engine_config(seed)
    loss_fn = functools.partial(clip_loss, invisible_weight=setup.invisible_weight)
    train_data = crop_clips(train, setup.crop_size, setup.context)
    val_data = crop_clips(val, setup.crop_size, setup.context)
    val_path = None if out_dir is None else Path(out_dir) / "val_loss.csv"
    validation = ValidationLoss(model, fixed_batches(val_data, setup.val_clips), setup.iters, val_path, loss_fn=loss_fn)
    start = time.perf_counter()
    summary = Trainer(model, None, config, out_dir, loss_fn=loss_fn, callbacks=[validation],
                      batches=ClipBatches(train_data, setup.clips_per_batch, seed, setup.augment),
                      run_settings={"model": model_cfg.to_dict(), "training": asdict(setup)}).train(resume=resume)
    model.eval()
    done = summary["iterations"] - summary["start_iteration"]
    return ShapeRun(model, time.perf_counter() - start, summary["seconds"] / max(done, 1),
                    validation.check(phase_end=max(config.lr_steps, default=None)), validation.curve(),
                    {k: float(v) for k, v in summary["losses"].items()})


@torch.no_grad()
def predict_amodal(model: ShapeCompletion, visible: Sequence[np.ndarray], labels: Sequence[int], crop_size: int,
                   context: float, per_batch: int = 8) -> list[np.ndarray]:
    """Amodal masks (T, H, W) bool of clips of visible masks (T, H, W) and their classes: crop, model,
    paste back, logit > 0. Needs nothing but the visible masks: the inference path."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    for s in range(0, len(visible), per_batch):
        chunk = [np.asarray(v, dtype=bool) for v in visible[s:s + per_batch]]
        crops, boxes = crop_visible(chunk, crop_size, context)
        logits = model(crops.to(device), torch.as_tensor(list(labels[s:s + per_batch])).to(device)).cpu()
        out += [(paste_logits(lg, box, v.shape[1:]) > 0).numpy() for lg, box, v in zip(logits, boxes, chunk)]
    model.train(was_training)
    return out


def predict_clips(model: ShapeCompletion, clips: Sequence[ShapeClip], setup: ShapeTraining, per_batch: int = 8
                  ) -> list[np.ndarray]:
    """Amodal masks (T, H, W) bool of each clip (:func:`predict_amodal` with the training's crop)."""
    return predict_amodal(model, [c.visible for c in clips], [c.label for c in clips], setup.crop_size,
                          setup.context, per_batch)


def crop_oracle(clip: ShapeClip, setup: ShapeTraining) -> np.ndarray:
    """The true amodal masks through the model's crop and paste: the best any crop-based prediction scores."""
    box = clip_box(clip.visible, setup.context)
    soft = crop_masks(clip.amodal, box, setup.crop_size).clamp(1e-4, 1 - 1e-4)
    return (paste_logits(torch.logit(soft), box, clip.visible.shape[1:]) > 0).numpy()


def evaluate_shape(model: ShapeCompletion | None, clips: Sequence[ShapeClip], setup: ShapeTraining
                   ) -> dict[str, dict[str, float]]:
    """Pooled metrics (:func:`~instseg.video.voin.shape_metrics.pool_scores`) of the model (if given),
    the baselines (``visible``, ``convex_hull``) and the ``crop_oracle``, on the same clips."""
    preds: dict[str, list[np.ndarray]] = {}
    if model is not None:
        preds["model"] = predict_clips(model, clips, setup)
    for name, baseline in BASELINES.items():
        preds[name] = [baseline(c.visible, c.name) for c in clips]
    preds["crop_oracle"] = [crop_oracle(c, setup) for c in clips]
    return {name: pool_scores(shape_scores(p, c.amodal, c.visible, c.occluded, c.name) for p, c in zip(ps, clips))
            for name, ps in preds.items()}
