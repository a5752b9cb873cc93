"""Training VOIN's inpainting rows (Table 5.8) and predicting whole samples with them.

``train_inpainter(row, setup, train, val, ...)`` trains one row (``inpaint_gan.InpaintRow``: the
generator config, whether it reads the propagated frames, which discriminators, the loss weights)
on crops of VOI clips (``inpaint_data``) with the GAN loop of ``inpaint_gan``, and measures its
validation loss ``val_points`` times: the generator's hole L1 (mean |raw - target| over the hole,
frames in [-1, 1]) on fixed validation crops — the reconstruction, not the adversarial terms,
which do not settle to a level — then the engine's plateau check over both learning-rate phases.

Which clips iteration ``i`` sees, their temporal window and symmetry are a pure function of the
seed and ``i``. Validation crops are the central ``clip_frames`` frames of ``val_clips`` clips
spread evenly over the split, unaugmented.

``inpaint_clip`` predicts a whole sample: its crop (all frames), the generator, the raw output
resized back to the box (bilinear) and pasted on the hole only; every other pixel is the
corrupted input, bit for bit.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.data.coco_json import read_json
from instseg.engine import InfiniteBatchSampler, derive_seed
from instseg.engine.plateau import PlateauCheck
from instseg.errors import InputError
from instseg.evaluation.inpainting import psnr_frames, region_psnr
from instseg.video.voin.data import VoiSample, iter_samples
from instseg.video.voin.flow import FlowValidation, fixed_indices
from instseg.video.voin.generator import GeneratorConfig
from instseg.video.voin.inpaint_data import (CropSettings, InpaintCrop, PropagationCache, clip_tensors, crop_box,
                                             crop_sample, from_unit, sample_name)
from instseg.video.voin.inpaint_gan import (Callback, GeneratorFactory, InpaintRow, InpaintTraining, build_models,
                                            train_gan, voin_generator)
from instseg.video.voin.losses import LossWeights, masked_l1
from instseg.video.voin.shape_training import track_categories

Batch = dict[str, Tensor]


def category_labels(annotation_path: str | Path) -> tuple[dict[tuple[int, int], int], int]:
    """``{(video_id, track_id): label}`` with labels 0..K-1 in category-id order, and K: the
    multi-class discriminator's real classes are the benchmark's categories."""
    ids = sorted(int(c["id"]) for c in read_json(Path(annotation_path))["categories"])
    label = {cid: i for i, cid in enumerate(ids)}
    return {key: label[cid] for key, cid in track_categories(annotation_path).items()}, len(ids)


def load_crops(index_path: str | Path, annotation_path: str | Path, crop: CropSettings,
               propagation: PropagationCache | None = None, frames_root: str | Path | None = None
               ) -> list[InpaintCrop]:
    """The crops of a VOI split, labelled from the annotation file it was built from; with
    ``propagation`` each carries its cropped propagated input (computed once per sample there)."""
    labels, _ = category_labels(annotation_path)
    crops = []
    for entry, sample in iter_samples(index_path, frames_root):
        key = (int(entry["video_id"]), int(entry["track_id"]))
        if key not in labels:
            raise InputError(f"video {key[0]} track {key[1]} is not in {annotation_path}", index_path, entry["file"])
        crops.append(crop_sample(sample, crop, labels[key], propagation(sample) if propagation is not None else None))
    return crops


def stack(items: Sequence[Mapping[str, Tensor]], labels: Sequence[int]) -> Batch:
    out = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    out["labels"] = torch.tensor(list(labels), dtype=torch.long)
    return out


class CropBatches:
    """The loop's batch source: iteration ``i`` gets ``batch_size`` crops (an epoch-wise permutation),
    each a random window of ``clip_frames`` frames under a random symmetry, both drawn from
    ``derive_seed(seed, i, k)``."""

    def __init__(self, crops: Sequence[InpaintCrop], setup: InpaintTraining, seed: int, propagated: bool) -> None:
        if not crops:
            raise InputError("no training crops")
        short = [c.name for c in crops if c.length < setup.clip_frames]
        if short:
            raise InputError(f"{len(short)} clips are shorter than clip_frames={setup.clip_frames}", record=short[0])
        self.crops, self.setup, self.seed, self.propagated = list(crops), setup, seed, propagated
        self.sampler = InfiniteBatchSampler(len(self.crops), setup.batch_size, seed)

    def batch(self, iteration: int) -> Batch:
        items, labels = [], []
        for k, i in enumerate(self.sampler.global_batch(iteration)):
            crop = self.crops[i]
            rng = np.random.default_rng(derive_seed(self.seed, iteration, k))
            start = int(rng.integers(crop.length - self.setup.clip_frames + 1))
            code = int(rng.integers(16)) if self.setup.augment else 0
            items.append(clip_tensors(crop, start, self.setup.clip_frames, code, self.propagated))
            labels.append(crop.label)
        return stack(items, labels)

    def __call__(self, start: int) -> Iterator[Batch]:
        for iteration in itertools.count(start):
            yield self.batch(iteration)


def validation_batches(crops: Sequence[InpaintCrop], setup: InpaintTraining, propagated: bool) -> list[Batch]:
    """The fixed validation batches (module docstring)."""
    if not crops:
        raise InputError("no validation crops")
    picks = [crops[i] for i in fixed_indices(setup.val_clips, len(crops))]
    items = [clip_tensors(c, (c.length - setup.clip_frames) // 2, setup.clip_frames, 0, propagated) for c in picks]
    return [stack(items[s:s + setup.batch_size], [c.label for c in picks[s:s + setup.batch_size]])
            for s in range(0, len(items), setup.batch_size)]


class HoleL1:
    """The validation loss: the generator's mean |raw - target| over the hole."""

    def __init__(self, use_propagated: bool) -> None:
        self.use_propagated = use_propagated

    def __call__(self, generator: nn.Module, batch: Batch) -> dict[str, Tensor]:
        out = generator(batch["frames"], batch["visible"], batch["occluded"], batch["amodal"],
                        batch["propagated"] if self.use_propagated else None)
        return {"hole": masked_l1(out["raw"], batch["target"], batch["occluded"])}


@dataclass
class InpaintRun:
    """A trained generator and what its training measured."""

    model: nn.Module
    seconds: float  # the whole call (validation and checkpoints included)
    sec_per_iter: float  # the GAN steps alone
    plateau: PlateauCheck
    val_curve: list[tuple[int, float]]
    final_losses: dict[str, float]
    history: list[dict[str, float]]


def train_inpainter(row: InpaintRow, setup: InpaintTraining, train: Sequence[InpaintCrop], val: Sequence[InpaintCrop],
                    num_classes: int, seed: int = 0, out_dir: str | Path | None = None, resume: bool = False,
                    generator: GeneratorFactory = voin_generator, device: str | torch.device | None = None,
                    callbacks: Sequence[Callback] = ()) -> InpaintRun:
    """A fresh generator (and discriminators) of ``row``, initialised from ``seed``, trained on
    ``train`` (module docstring); ``generator(row)`` builds any module with the generator's
    signature. With ``out_dir`` the run checkpoints there (and its validation curve goes to
    ``val_loss.csv``) and can ``resume``."""
    setup.check()
    models = build_models(row, setup, num_classes, seed, generator)
    val_path = None if out_dir is None else Path(out_dir) / "val_loss.csv"
    validation = FlowValidation(models.generator, validation_batches(val, setup, row.use_propagated), setup.iters,
                                val_path, points=setup.val_points, loss_fn=HoleL1(row.use_propagated), device=device)
    start = time.perf_counter()
    summary = train_gan(models, row, setup, CropBatches(train, setup, seed, row.use_propagated), seed, out_dir,
                        resume, [validation, *callbacks], {"num_classes": num_classes}, device)
    models.generator.eval()
    done = summary.iterations - summary.start_iteration
    return InpaintRun(models.generator, time.perf_counter() - start, summary.step_seconds / max(done, 1),
                      validation.check(phase_end=setup.decay_iter), validation.curve(), summary.losses,
                      summary.history)


def table_rows(generator: GeneratorConfig = GeneratorConfig(), weights: LossWeights = LossWeights()
               ) -> dict[str, InpaintRow]:
    """The trained rows of Table 5.8 and its ablations at one generator size. ``lgtsm``: LGTSM-like,
    a gated TSM generator without occlusion guidance, T-PatchGAN only, no propagated frames; it reads
    the visible and hole masks as the paper adapts its baselines (and the amodal one, which adds
    nothing: in a VOI sample amodal = visible | occluded)."""
    full = InpaintRow(generator, True, True, True, True, weights)
    return {"voin": full,
            "voin_no_flow": InpaintRow(generator, False, True, True, True, weights),
            "no_gating": InpaintRow(replace(generator, occlusion_gating=False), True, True,
                                    True, True, weights),
            "no_stam": InpaintRow(generator, True, True, True, False, weights),
            "lgtsm": InpaintRow(replace(generator, occlusion_gating=False), False, True,
                                False, False, weights)}


@torch.no_grad()
def inpaint_clip(model: nn.Module, sample: VoiSample, crop: CropSettings, propagation: PropagationCache | None = None,
                 cropped: InpaintCrop | None = None) -> np.ndarray:
    """The whole sample inpainted (L, H, W, 3) uint8 (module docstring); ``propagation`` for a model
    that reads the propagated frames, or ``cropped``: the sample's crop made before (with its
    propagated input where the model reads one), which then is not recomputed."""
    box = crop_box(sample.amodal, crop)
    y0, x0, side = box
    inside = np.zeros(sample.occluded.shape[1:], dtype=bool)
    inside[y0:y0 + side, x0:x0 + side] = True
    if (sample.occluded & ~inside).any():
        raise InputError(f"part of the hole lies outside the crop box {box}", record=sample_name(sample))
    if cropped is None:
        cropped = crop_sample(sample, crop, propagation=propagation(sample) if propagation is not None else None,
                              box=box)
    elif tuple(cropped.box) != tuple(box) or cropped.name != sample_name(sample):
        raise InputError(f"the given crop ({cropped.name}, box {cropped.box}) is not this sample's {box}",
                         record=sample_name(sample))
    use_propagated = propagation is not None or cropped.propagated is not None
    t = clip_tensors(cropped, propagated=use_propagated)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = model(*(t[k][None].to(device) for k in ("frames", "visible", "occluded", "amodal")),
                t["propagated"][None].to(device) if use_propagated else None)
    model.train(was_training)
    raw = out["raw"][0].float().cpu().permute(1, 0, 2, 3)  # (L, 3, S, S)
    if side != crop.size:
        raw = F.interpolate(raw, size=(side, side), mode="bilinear", align_corners=False)
    pred = from_unit(raw).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    result = sample.corrupted.copy()
    window = result[:, y0:y0 + side, x0:x0 + side]
    hole = sample.occluded[:, y0:y0 + side, x0:x0 + side]
    window[hole] = pred[hole]
    return result


Inpainter = Callable[[VoiSample], np.ndarray]


def evaluate_inpainters(methods: Mapping[str, Inpainter], samples: Sequence[VoiSample]) -> dict[str, dict[str, float]]:
    """Per method, the means over samples of the PSNR on the hole (``psnr_hole``: the occluded pixels
    against the clean frames) and of the whole-frame PSNR of the composited frames (``psnr``), both
    over the frames that have a hole (a frame without one would score +inf)."""
    if not samples:
        raise InputError("no samples to evaluate")
    scores: dict[str, dict[str, list[float]]] = {m: {"psnr_hole": [], "psnr": []} for m in methods}
    for sample in samples:
        if not sample.occluded.any():
            continue
        for name, method in methods.items():
            pred = method(sample)
            scores[name]["psnr_hole"].append(region_psnr(pred, sample.clean, sample.occluded))
            holed = sample.occluded.any(axis=(1, 2))
            scores[name]["psnr"].append(float(psnr_frames(pred, sample.clean, sample.occluded)[holed].mean()))
    return {m: {k: float(np.mean(v)) for k, v in s.items()} | {"samples": len(s["psnr"])} for m, s in scores.items()}

