"""The video commands of ``instseg``: building the video benchmark, the YouTube-VIS and MOTS
evaluators, ``track`` on any video and ``inpaint`` (VOIN) of its occluded objects. Bad input is an
InputError (exit 2, one line naming the file and record), as for the image commands."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

from instseg.errors import InputError

VIDEO_BENCHMARK_DIR = "occluded_shapes_vis"  # data/<this>, tracked by data_vis.dvc


def _video_benchmark_config(params_path: str, scale: str | None):
    from instseg.config import load_params
    from instseg.video.data.occluded_shapes_vis import VideoBenchmarkConfig
    from instseg.video.params import video_section

    return VideoBenchmarkConfig.from_dict(video_section(load_params(params_path), scale, "benchmark"))


def build_video_data(params_path: str, scale: str | None, out: Path, workers: int) -> dict[str, Any]:
    """The OccludedShapes-VIS benchmark of ``scale`` written to ``out``; its summary."""
    from instseg.video.data.occluded_shapes_vis import build_video_benchmark

    return build_video_benchmark(_video_benchmark_config(params_path, scale), out, workers=workers)


def cmd_data_build_video(args: argparse.Namespace) -> int:
    from instseg.cli import empty_output_dir

    out = empty_output_dir(args.out, args.force)
    summary = build_video_data(args.params, args.scale, out, args.workers)
    print(f"wrote {summary['videos']} videos ({summary['frames']} frames, {summary['full_occlusion_events']} "
          f"full-occlusion events) to {out} in {summary['seconds']:.1f} s "
          f"({summary['frames_per_second']:.0f} frames/s, {args.workers} worker(s))")
    return 0


def _write_json(path: str | Path, data: Any) -> None:
    from instseg.engine.checkpoint import atomic_write

    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()))


def cmd_eval_video(args: argparse.Namespace) -> int:
    from instseg.video.data.ytvis import load_ytvis_gt, load_ytvis_results
    from instseg.video.evaluation.ytvis import ap_by_occlusion_vis, evaluate_vis

    gt = load_ytvis_gt(args.gt)
    results = load_ytvis_results(args.dt, gt)
    metrics: dict[str, Any] = evaluate_vis(gt, results)
    if args.by_occlusion:
        metrics["by_occlusion"] = ap_by_occlusion_vis(gt, results)
    if args.min_gap is not None:
        from instseg.video.evaluation.recovery import identity_recovery_vis

        metrics["identity_recovery"] = identity_recovery_vis(gt, results, args.min_gap, args.grace)
    if args.out:
        _write_json(args.out, metrics)
    for key, value in metrics.items():
        if key not in ("by_occlusion", "identity_recovery"):
            print(f"{key:<6} {'-' if value is None else f'{value:.4f}'}")
    for level, row in metrics.get("by_occlusion", {}).items():
        print(f"AP {level:<7} {'-' if row['AP'] is None else format(row['AP'], '.4f')}  ({row['n_gt']} GT tracks)")
    if "identity_recovery" in metrics:
        _print_recovery(metrics["identity_recovery"], args.min_gap)
    return 0


def _print_recovery(recovery: dict[str, Any], min_gap: int) -> None:
    rate = "-" if recovery["rate"] is None else f"{recovery['rate']:.3f}"
    print(f"identity recovery after >= {min_gap} hidden frames: {recovery['recovered']}/{recovery['events']} = {rate} "
          f"({recovery['never_matched']} more never matched before the gap)")


def _class_names(spec: str | None) -> tuple[dict[int, str], int | None]:
    """``--classes``: a YouTube-VIS/COCO JSON (its categories; no ignore class) or ``1:car,2:pedestrian``
    (KITTI-MOTS' classes and its ignore class 10 by default)."""
    if spec is None:
        return {1: "car", 2: "pedestrian"}, 10
    path = Path(spec)
    if path.suffix == ".json":
        from instseg.data.coco_json import read_json

        data = read_json(path)
        try:
            return {int(c["id"]): str(c["name"]) for c in data["categories"]}, None
        except (KeyError, TypeError, ValueError):
            raise InputError("needs a 'categories' list of {id, name}", path) from None
    try:
        pairs = [item.split(":", 1) for item in spec.split(",")]
        return {int(k): name for k, name in pairs}, 10
    except ValueError:
        raise InputError(f"--classes {spec!r}: expected a JSON file or id:name,id:name") from None


def cmd_eval_mots(args: argparse.Namespace) -> int:
    from instseg.video.evaluation.mots import evaluate_mots

    names, ignore = _class_names(args.classes)
    if args.ignore_class is not None:
        ignore = None if args.ignore_class < 0 else args.ignore_class
    metrics = evaluate_mots(args.gt, args.dt, names, ignore_class=ignore, min_gap=args.min_gap, grace=args.grace)
    if args.out:
        _write_json(args.out, metrics)
    columns = ["HOTA", "DetA", "AssA", "MOTSA", "MOTSP", "sMOTSA", "IDF1", "IDSW"]
    print(f"{'class':<14}" + "".join(f"{c:>8}" for c in columns))
    for name, row in [*metrics["per_class"].items(), ("mean", metrics["mean"])]:
        print(f"{name:<14}" + "".join(f"{row[c]:>8}" if c == "IDSW" else f"{row[c]:>8.4f}" for c in columns))
    if "identity_recovery" in metrics:
        _print_recovery(metrics["identity_recovery"], args.min_gap)
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from instseg.video.data.frames import open_video
    from instseg.video.data.kitti_mots import write_kitti_mots
    from instseg.video.data.track_results import TrackedVideo
    from instseg.video.data.ytvis import write_ytvis_results
    from instseg.video.models.inference import detect_frames, track_frames
    from instseg.video.pcan.runs import is_pcan_run, load_pcan_run
    from instseg.video.tracking.runs import load_tracker_run

    video = open_video(args.video, fps=args.fps)
    frames_for_detector, frames_for_viz = itertools.tee(video.frames()) if args.viz else (video.frames(), None)
    if is_pcan_run(args.checkpoint):  # PCAN: memory-enhanced maps, its embeddings, refined masks
        from instseg.video.pcan.cache import stream_frames
        from instseg.video.pcan.tracking import track_frames_pcan

        run = load_pcan_run(args.checkpoint)
        frames = stream_frames(run.detector, run.detector_spec.label_to_category_id, frames_for_detector,
                               batch_size=args.batch_size)
        stream = ((frame.detections.as_dict() | {"masks": masks[""]}, ids) for frame, ids, masks in
                  track_frames_pcan(run.model, frames, video.size, {"": (run.model, run.model.config.momentum)},
                                    run.tracker))
    else:
        run = load_tracker_run(args.checkpoint)
        detections = detect_frames(run.detector, frames_for_detector, run.detector_spec.label_to_category_id,
                                   with_features=run.embed_head is not None, batch_size=args.batch_size)
        stream = ((det.as_dict(), ids) for det, ids in track_frames(detections, run.tracker, run.embed_head))
    tracked = TrackedVideo()
    writer = None
    if args.viz:
        from instseg.video.viz import VideoWriter, draw_tracks

        writer = VideoWriter(args.viz, fps=video.fps)
    try:
        for det, ids in tqdm(stream, total=video.length, desc=f"track {video.name}", unit="frame", disable=None):
            tracked.add(det, ids)
            if writer is not None:
                writer.write(draw_tracks(next(frames_for_viz), det["masks"].numpy(), ids.numpy()))
    finally:
        if writer is not None:
            writer.close()
    results = tracked.ytvis_results(video_id=1)
    write_ytvis_results(args.out, results)
    _write_json(Path(args.out).with_suffix(".video.json"), {
        "videos": [{"id": 1, "name": video.name, "width": video.size[1], "height": video.size[0],
                    "length": tracked.length, "file_names": video.file_names()[:tracked.length]}],
        "categories": [{"id": cid, "name": str(cid)} for cid in sorted(set(run.detector_spec.label_to_category_id.values()))],
        "annotations": []})
    print(f"{video.name}: {tracked.length} frames, {len(results)} tracks -> {args.out}")
    if args.mots_out:
        path = Path(args.mots_out) / f"{video.name}.txt"
        write_kitti_mots(path, tracked.mots_rows())
        print(f"KITTI-MOTS rows -> {path}")
    if args.viz:
        print(f"overlay video -> {args.viz}")
    return 0


def _id_list(spec: str, option: str) -> list[int]:
    try:
        ids = [int(k) for k in spec.split(",") if k.strip()]
    except ValueError:
        raise InputError(f"{option} {spec!r}: expected comma-separated integer ids such as 1,3") from None
    if not ids or min(ids) < 1:
        raise InputError(f"{option} {spec!r}: expected object ids >= 1")
    return ids


def _categories(spec: str | None) -> dict[int, int]:
    """``--categories 1:2,3:1``: object id -> category id of the shape model."""
    if not spec:
        return {}
    try:
        return {int(k): int(v) for k, v in (item.split(":") for item in spec.split(","))}
    except ValueError:
        raise InputError(f"--categories {spec!r}: expected object:category pairs such as 1:2,3:1") from None


class _Mp4:
    """``OUT/inpainted.mp4`` through the project's writer (PyAV, H.264); a codec or container
    failure is a warning and the mp4 is skipped: the PNG frames are the result."""

    def __init__(self, path: Path, fps: float) -> None:
        import av

        from instseg.video.viz import VideoWriter

        self.path, self.writer = path, None
        self.errors = (av.FFmpegError, ValueError, OSError, RuntimeError)  # a missing codec is a ValueError
        try:
            self.writer = VideoWriter(path, fps=fps)
        except self.errors as exc:
            self._skip(exc)

    def _skip(self, exc: Exception) -> None:
        import sys

        print(f"instseg: warning: no mp4 ({exc.__class__.__name__}: {exc}); the frames are written as PNGs",
              file=sys.stderr)
        self.writer = None
        self.path.unlink(missing_ok=True)

    def write(self, frame: Any) -> None:
        if self.writer is not None:
            try:
                self.writer.write(frame)
            except self.errors as exc:
                self._skip(exc)

    def close(self) -> bool:
        """Finish the file; whether an mp4 was written."""
        if self.writer is not None:
            try:
                self.writer.close()
            except self.errors as exc:
                self._skip(exc)
        return self.writer is not None


def cmd_inpaint(args: argparse.Namespace) -> int:
    from PIL import Image
    from tqdm import tqdm

    from instseg.cli import empty_output_dir
    from instseg.video.data.frames import open_video
    from instseg.video.voin.inpaint_io import check_counts, frame_items, mask_files, scan_masks
    from instseg.video.voin.pipeline import InpaintStats, check_amodal_source, inpaint_video
    from instseg.video.voin.runs import load_voin_run

    run = load_voin_run(args.checkpoint)
    check_amodal_source(run, args.amodal_masks is not None)
    video = open_video(args.video, fps=args.fps)
    masks = mask_files(args.masks)
    check_counts(video.length, masks, video.path)
    present = scan_masks(masks, video.size)
    amodal = None
    if args.amodal_masks is not None:
        amodal = mask_files(args.amodal_masks, "amodal masks")
        if len(amodal) != len(masks):
            raise InputError(f"{len(amodal)} amodal mask files but {len(masks)} masks (one of each per frame)",
                             args.amodal_masks)
        scan_masks(amodal, video.size, "amodal mask")
    objects = _id_list(args.objects, "--objects") if args.objects else sorted(present)
    if not objects:
        raise InputError("no object id > 0 in any mask: nothing to inpaint", args.masks)
    missing = [k for k in objects if k not in present]
    if missing:
        raise InputError(f"object id(s) {', '.join(map(str, missing))} in no mask (ids present: "
                         f"{', '.join(map(str, sorted(present))) or 'none'})", args.masks)
    labels = _categories(args.categories)
    if run.num_categories is not None and any(not 0 <= c <= run.num_categories for c in labels.values()):
        raise InputError(f"--categories {args.categories!r}: the shape model knows categories 0..{run.num_categories}")
    run.to(args.device)
    out = empty_output_dir(args.out, args.force)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    stats = InpaintStats()
    mp4 = _Mp4(out / "inpainted.mp4", video.fps)
    stream = inpaint_video(run, frame_items(video.frames(), masks, amodal), objects, args.window, args.overlap,
                           labels, stats)
    try:
        for t, frame in enumerate(tqdm(stream, total=video.length, desc=f"inpaint {video.name}", unit="frame",
                                       disable=None)):
            Image.fromarray(frame).save(out / "frames" / f"{t:05d}.png")
            mp4.write(frame)
    finally:
        wrote_mp4 = mp4.close()
    filled = ", ".join(f"{k}: {stats.hole.get(k, 0)} px ({stats.propagated.get(k, 0)} propagated)" for k in objects)
    print(f"{video.name}: {stats.frames} frames in {stats.windows} windows, holes {filled} -> {out / 'frames'}"
          + (f" and {out / 'inpainted.mp4'}" if wrote_mp4 else ""))
    return 0


def _add_recovery_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-gap", type=int, default=None,
                        help="also report identity recovery after >= this many frames without a visible mask")
    parser.add_argument("--grace", type=int, default=3, help="frames after a gap in which the track may be re-found")


def add_video_commands(sub: argparse._SubParsersAction, data: argparse._SubParsersAction) -> None:
    """Register the video commands on the ``instseg`` parser (``sub``) and its ``data`` group."""
    from instseg.cli import add_build_arguments

    build = data.add_parser("build-video", help="generate the OccludedShapes-VIS video benchmark "
                                                "(its preset: video.scales.<scale> in params.yaml)")
    add_build_arguments(build)
    build.set_defaults(func=cmd_data_build_video)

    ev = sub.add_parser("eval-video", help="YouTube-VIS AP/AR of a results file (as the official ytvoseval)")
    ev.add_argument("--gt", required=True, help="YouTube-VIS 2019/2021 JSON (or OVIS)")
    ev.add_argument("--dt", required=True, help="results JSON: [{video_id, category_id, score, segmentations}]")
    ev.add_argument("--out", default=None, help="write the metrics as JSON")
    ev.add_argument("--by-occlusion", action="store_true", help="AP per OVIS occlusion level (light/medium/heavy)")
    _add_recovery_arguments(ev)
    ev.set_defaults(func=cmd_eval_video)

    mots = sub.add_parser("eval-mots", help="MOTS metrics (HOTA, MOTSA, IDF1, ...) through TrackEval")
    mots.add_argument("--gt", required=True, help="folder of <seq>.txt in KITTI-MOTS format")
    mots.add_argument("--dt", required=True, help="folder of <seq>.txt results (a missing file is an empty one)")
    mots.add_argument("--out", default=None, help="write the metrics as JSON")
    mots.add_argument("--classes", default=None,
                      help="a JSON with categories, or id:name,... (default: KITTI's 1:car,2:pedestrian)")
    mots.add_argument("--ignore-class", type=int, default=None,
                      help="class id of ignore regions (default: 10 for KITTI classes, none for a JSON; -1: none)")
    _add_recovery_arguments(mots)
    mots.set_defaults(func=cmd_eval_mots)

    tr = sub.add_parser("track", help="track the instances of a video (folder of frames or a video file)")
    tr.add_argument("--checkpoint", required=True, help="a PCAN run (pcan.json), a tracker run (tracker.json) or a detector run directory")
    tr.add_argument("--video", required=True, help="a folder of frames or a video file (mp4, avi, ...)")
    tr.add_argument("--out", required=True, help="YouTube-VIS results JSON (a .video.json describing the video "
                                                   "is written beside it)")
    tr.add_argument("--mots-out", default=None, help="also write KITTI-MOTS rows to DIR/<video>.txt")
    tr.add_argument("--viz", default=None, help="write an overlay video (mp4), one colour per track")
    tr.add_argument("--fps", type=float, default=10.0, help="frame rate of a frame folder (for --viz)")
    tr.add_argument("--batch-size", type=int, default=8)
    tr.set_defaults(func=cmd_track)

    inp = sub.add_parser("inpaint", help="VOIN: fill the occluded parts of objects in a video (sliding windows: "
                                         "memory does not grow with the video's length)")
    inp.add_argument("--checkpoint", required=True, help="a VOIN run directory (voin.json and the models' weights)")
    inp.add_argument("--video", required=True, help="a folder of frames (sorted by name) or a video file")
    inp.add_argument("--masks", required=True,
                     help="folder of per-frame visible-mask PNGs, one per frame in sorted order: palette "
                          "(index = object id) or single-channel instance ids (8/16 bit), 0 = background")
    inp.add_argument("--amodal-masks", default=None,
                     help="the objects' amodal masks in the same format (default: the run's shape model "
                          "predicts them)")
    inp.add_argument("--objects", default=None, help="object ids to inpaint, e.g. 1,3 (default: every id > 0 "
                                                      "in the masks), in this order")
    inp.add_argument("--categories", default=None,
                     help="object:category pairs for the shape model, e.g. 1:2,3:1 (default 0 = unknown)")
    inp.add_argument("--out", required=True, help="writes OUT/frames/00000.png ... and OUT/inpainted.mp4 (H.264 "
                                                   "through PyAV; without that codec a warning and no mp4)")
    inp.add_argument("--window", type=int, default=16, help="frames written per window")
    inp.add_argument("--overlap", type=int, default=None,
                     help="context frames read on each side of a window (default: the generator's temporal "
                          "receptive field, which makes the windows exact for the generator)")
    inp.add_argument("--fps", type=float, default=10.0, help="frame rate of a frame folder (for the mp4)")
    inp.add_argument("--device", default="cpu", help="torch device of the models (cpu, cuda, ...)")
    inp.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    inp.set_defaults(func=cmd_inpaint)


def sync_video_data(dvc_file: Path, params_path: str, workers: int) -> str:
    """Regenerate the video benchmark tracked by ``dvc_file`` if missing or different; a line saying what happened."""
    from instseg.cli import sync_generated
    from instseg.config import load_params
    from instseg.video.params import video_data_scale

    scale = video_data_scale(load_params(params_path))
    return sync_generated(dvc_file, lambda folder: build_video_data(params_path, scale, folder, workers),
                          "video benchmark")
