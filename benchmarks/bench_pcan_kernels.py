"""Wall time of the two kernels that dominated a PCAN clip-training step at ``cpu`` scale, each
against its reference formulation measured in the same run (medians of ``--repeat`` runs, one
thread, as the notebook's workers run):

- ``assign`` (eq. 5.3's softmax over prototypes, computed along dim 1 of a [B, K, P] layout)
  against the same softmax over the last dimension of [B, P, K];
- ``roi_align_bilinear`` (each item's map read in place by one grid) against torchvision's
  ``roi_align`` with the same settings (aligned, one sample per bin);
- the clip training's validation loss (PCAN's default model, no grad) over 32 clips measured 4 at
  a time, as ``FixedBatchValidation`` now does, against the same clips in one batch;
- a refine retraining (the engine's trainer, 20 steps of 128 ROIs) keeping the weights' moving
  average (``ema_decay``), against the same retraining without it: the average's cost;
- a refine retraining of the same 20 steps reading the attention maps of the ROIs they draw,
  computed once (``with_maps``, its cost included), against the same steps with the instance EM
  run on each batch (``with_maps`` of the batch inside the loss), as every step did before.

Sizes are a PCAN batch's: 8 frames (4 clips, key + reference) of 28 ROIs each on the FPN maps of a
128² frame (P2-P5: 32² ... 4², 32 channels), instance EM over 14 x 14 ROI features with 10
prototypes; forward, and forward + backward where the kernel is trained through.

Usage: python benchmarks/bench_pcan_kernels.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.ops import roi_align

from instseg.engine.trainer import Trainer
from instseg.video.layers.prototypes import assign, squared_distances
from instseg.video.layers.roi_sampling import roi_align_bilinear
from instseg.video.models.inference import FrameDetections
from instseg.video.pcan.cache import TARGET_KEYS, CachedFrame, CachedVideo
from instseg.video.pcan.model import PCAN, PCANConfig
from instseg.video.pcan.refine_training import (RefineTraining, RoiBatches, RoiSet, frozen_rois, refine_loss,
                                                refine_variant, with_maps)
from instseg.video.pcan.training import clips_loss


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return 1e3 * statistics.median(times)


def _last_dim_assign(points: torch.Tensor, prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(-squared_distances(points, prototypes) / temperature, dim=-1)


def _row(name: str, ours: float, reference: float) -> None:
    print(f"{name:<44} ours {ours:8.2f} ms   reference {reference:8.2f} ms   speed-up {reference / ours:5.2f}x")


def _boxes(g: torch.Generator, n: int) -> torch.Tensor:
    """``n`` random xyxy boxes of side 8-38 inside a 128² frame."""
    xy = torch.rand(n, 2, generator=g) * 90
    return torch.cat([xy, (xy + 8 + torch.rand(n, 2, generator=g) * 30).clamp(max=128)], dim=1)


def _video(g: torch.Generator, index: int, frames: int = 12, rois: int = 28) -> CachedVideo:
    """A synthetic training cache at the ``cpu`` sizes: 128² frames, P2-P5 of 32 channels, 28 ROIs
    per frame, 8 of them matched to tracks that are in every frame."""
    out = []
    for _ in range(frames):
        levels = {name: torch.randn(32, side, side, generator=g).half() for name, side in
                  (("0", 32), ("1", 16), ("2", 8), ("3", 4))}
        boxes = _boxes(g, rois)
        ids = torch.full((rois,), -1)
        ids[:8] = torch.arange(1, 9)
        det = FrameDetections(boxes[:8], torch.ones(8), torch.ones(8, dtype=torch.int64),
                              torch.zeros(8, 128, 128, dtype=torch.bool))
        logits = torch.randn(rois, 28, 28, generator=g).half()
        targets = {k: torch.rand(rois, 28, 28, generator=g) > 0.5 for k in TARGET_KEYS}
        out.append(CachedFrame(levels, (128, 128), det, logits[:8], boxes, torch.ones(rois, dtype=torch.int64), ids,
                               logits, {k: k - 1 for k in range(1, 9)}, targets))
    return CachedVideo(index, f"v{index}", (128, 128), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    for rois, positions, k in ((136, 196, 10), (136, 196, 20), (24, 256, 30)):
        points = torch.randn(rois, positions, 32, generator=g)
        mu = torch.randn(rois, k, 32, generator=g)
        _row(f"assign [{rois}, {positions}, K={k}] forward", _median_ms(lambda: assign(points, mu, 0.1), args.repeat),
             _median_ms(lambda: _last_dim_assign(points, mu, 0.1), args.repeat))
        grad = points.clone().requires_grad_()
        _row(f"assign [{rois}, {positions}, K={k}] fwd+bwd",
             _median_ms(lambda: assign(grad, mu, 0.1).pow(2).sum().backward(), args.repeat),
             _median_ms(lambda: _last_dim_assign(grad, mu, 0.1).pow(2).sum().backward(), args.repeat))
    boxes = [_boxes(g, 28) for _ in range(8)]
    for side in (32, 16, 8, 4):
        maps = torch.randn(8, 32, side, side, generator=g)
        scale = side / 128

        def ours() -> torch.Tensor:
            return roi_align_bilinear(maps, boxes, 14, scale)

        def reference() -> torch.Tensor:
            return roi_align(maps, boxes, 14, spatial_scale=scale, sampling_ratio=1, aligned=True)

        _row(f"RoIAlign {side}x{side} map, 224 ROIs, forward", _median_ms(ours, args.repeat),
             _median_ms(reference, args.repeat))
        maps.requires_grad_()
        _row(f"RoIAlign {side}x{side} map, 224 ROIs, fwd+bwd", _median_ms(lambda: ours().sum().backward(), args.repeat),
             _median_ms(lambda: reference().sum().backward(), args.repeat))
    videos = [_video(g, v) for v in range(8)]
    torch.manual_seed(0)
    model = PCAN(PCANConfig(), 32).train()
    clips = [(videos[k % 8], 3 + k // 8, 4 + k // 8) for k in range(32)]

    def chunked() -> float:
        return sum(float(sum(clips_loss(model, clips[i:i + 4]).values())) for i in range(0, 32, 4)) / 8

    with torch.no_grad():
        _row("validation loss, 32 clips (4 at a time)", _median_ms(chunked, max(args.repeat // 4, 3)),
             _median_ms(lambda: clips_loss(model, clips), max(args.repeat // 4, 3)))
    rois = frozen_rois(model, videos)

    def per_batch_maps(variant: PCAN, batch: tuple[RoiSet, torch.Tensor]) -> dict[str, torch.Tensor]:
        return refine_loss(variant, (with_maps(variant, rois, batch[1]), batch[1]))

    def retrain(ema_decay: float, maps_once: bool = True) -> None:
        training = RefineTraining(iters=20, rois_per_batch=128, ema_decay=ema_decay)
        variant = refine_variant(model, 0)
        mapped = with_maps(variant, rois, RoiBatches(rois, 128, 0).drawn(20)) if maps_once else rois
        Trainer(variant, None, training.engine_config(0), None, loss_fn=refine_loss if maps_once else per_batch_maps,
                batches=RoiBatches(mapped, 128, 0)).train()

    repeat = max(args.repeat // 4, 3)
    _row("refine retraining 20 x 128 ROIs, with EMA", _median_ms(lambda: retrain(0.95), repeat),
         _median_ms(lambda: retrain(0.0), repeat))
    _row("refine retraining 20 x 128 ROIs, maps once", _median_ms(lambda: retrain(0.0), repeat),
         _median_ms(lambda: retrain(0.0, maps_once=False), repeat))


if __name__ == "__main__":
    main()
