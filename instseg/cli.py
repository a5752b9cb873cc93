"""The ``instseg`` command. Bad input ends with exit code 2 and one line naming the file and the
record; ``--debug`` shows the traceback instead."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from instseg.errors import InputError

DVC_FILES = ("data.dvc", "data_vis.dvc")  # the generated benchmarks: images, videos


def _print_table(rows: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")


def _benchmark_config(params_path: str, scale: str | None):
    from instseg.config import load_params, scale_params
    from instseg.data.occluded_shapes import BenchmarkConfig

    params = load_params(params_path)
    return BenchmarkConfig.from_dict(scale_params(params, scale)["benchmark"])


def empty_output_dir(out: str | Path, force: bool) -> Path:
    """``out``, emptied if ``force``; a non-empty one without ``force`` is an InputError (nothing is lost)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise InputError("output directory is not empty (pass --force to replace it)", out)
        shutil.rmtree(out)
    return out


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark builder takes."""
    parser.add_argument("--scale", default=None, help="preset from params.yaml (default: its 'scale')")
    parser.add_argument("--out", required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="replace a non-empty output directory")


def cmd_data_build(args: argparse.Namespace) -> int:
    from instseg.data.occluded_shapes import build_benchmark

    cfg = _benchmark_config(args.params, args.scale)
    out = empty_output_dir(args.out, args.force)
    summary = build_benchmark(cfg, out, workers=args.workers)
    print(f"wrote {summary['images']} images to {out} in {summary['seconds']:.1f} s "
          f"({summary['images_per_second']:.0f} images/s, {args.workers} worker(s))")
    return 0


def sync_generated(dvc_file: Path, build: Callable[[Path], Any], what: str = "benchmark") -> str:
    """Regenerate the folder ``dvc_file`` tracks with ``build(folder)`` if it is missing or differs,
    in a staging folder that replaces it only when its hash matches; a line saying what happened."""
    from instseg.data.dvc_hash import dir_md5, tracked_md5

    tracked_path, expected = tracked_md5(dvc_file)
    root = dvc_file.parent / tracked_path
    if root.exists() and dir_md5(root) == expected:
        return f"{root} matches {dvc_file} ({expected})"
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        staging = Path(tmp) / root.name
        build(staging)
        got = dir_md5(staging)
        if got != expected:
            raise InputError(f"regenerated {what} hashes to {got}, not {expected}; are the libraries "
                             "pinned in constraints.txt installed?", dvc_file)
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    return f"regenerated {root}; it matches {dvc_file} ({expected})"


def _sync_image_data(dvc_file: Path, params_path: str, workers: int) -> str:
    from instseg.config import load_params
    from instseg.data.occluded_shapes import build_benchmark

    cfg = _benchmark_config(params_path, load_params(params_path)["data"]["scale"])
    return sync_generated(dvc_file, lambda folder: build_benchmark(cfg, folder, workers=workers))


def cmd_data_sync(args: argparse.Namespace) -> int:
    """Make data/ match data.dvc and data_vis.dvc by regenerating them, so `dvc repro` needs no
    remote. A .dvc file tracking a folder named like the video benchmark is rebuilt as video."""
    from instseg.data.dvc_hash import tracked_md5
    from instseg.video.cli import VIDEO_BENCHMARK_DIR, sync_video_data

    files = [Path(f) for f in args.dvc_file] if args.dvc_file else [f for f in map(Path, DVC_FILES) if f.exists()]
    for dvc_file in files:
        video = Path(tracked_md5(dvc_file)[0]).name == VIDEO_BENCHMARK_DIR
        print((sync_video_data if video else _sync_image_data)(dvc_file, args.params, args.workers))
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from instseg.data.coco_json import load_coco_gt
    from instseg.data.stats import split_statistics

    root = Path(args.dir)
    files = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
    if not files:
        raise InputError("no annotations/*.json found: is this a benchmark directory?", root)
    report = {f.stem: split_statistics(load_coco_gt(f), args.coco_occ_threshold) for f in files}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for split, stats in report.items():
        print(f"== {split}")
        _print_table([(k, v) for k, v in stats.items() if not isinstance(v, dict)])
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from instseg.data.coco_json import check_images_exist, load_coco_gt

    gt = load_coco_gt(args.json)
    if args.images:
        check_images_exist(gt, args.images, args.json)
    print(f"{args.json}: {len(gt['images'])} images, {len(gt['annotations'])} annotations, "
          f"{len(gt['categories'])} categories: OK")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from instseg.data.coco_json import load_coco_gt, load_coco_results
    from instseg.data.occlusion import coco_occ_image_ids
    from instseg.evaluation import ap_by_occlusion, evaluate, per_category_ap

    gt = load_coco_gt(args.gt)
    results = load_coco_results(args.dt, gt, args.iou_type)
    image_ids = coco_occ_image_ids(gt, threshold=args.coco_occ_threshold) if args.subset == "occ" else None
    metrics = evaluate(gt, results, args.iou_type, amodal=args.amodal, image_ids=image_ids)
    metrics["subset"] = args.subset
    if args.per_category:
        metrics["per_category"] = per_category_ap(gt, results, args.iou_type, amodal=args.amodal, image_ids=image_ids)
    if args.by_occlusion:
        # the same ground truth (visible or amodal) and images (all or COCO-OCC) as the metrics above
        metrics["by_occlusion"] = ap_by_occlusion(gt, results, iou_type=args.iou_type, amodal=args.amodal,
                                                  image_ids=image_ids)
    rows = [(k, v) for k, v in metrics.items() if not isinstance(v, (dict, list))]
    rows += [(f"AP occlusion {b['bin'][0]:g}-{b['bin'][1]:g} (n_gt {b['n_gt']})", "-" if b["AP"] is None else b["AP"])
             for b in metrics.get("by_occlusion", [])]
    _print_table(rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2))
    return 0


def _predict_records(model: Any, dataset: Any, label_to_category_id: dict[int, int], batch_size: int,
                     extra_maps: bool = False, viz_dir: Path | None = None, device: Any = "cpu") -> list[dict]:
    from instseg.models.inference import detections_to_coco, predict_batches

    images = [dataset[i][0] for i in range(len(dataset))]
    records = []
    for k, pred in enumerate(predict_batches(model, images, batch_size, device)):
        image_id = dataset.image_ids[k]
        records.extend(detections_to_coco(pred, image_id, label_to_category_id, extra_maps=extra_maps))
        if viz_dir is not None:
            from instseg.viz.draw import save_prediction_overlay

            save_prediction_overlay(images[k], pred, viz_dir / f"{image_id}.png")
    return records


def cmd_train(args: argparse.Namespace) -> int:
    from instseg.config import load_params, scale_params
    from instseg.data.dataset import CocoInstanceDataset, collate_fn
    from instseg.data.splits import parse_mask_categories
    from instseg.engine import TrainConfig, Trainer
    from instseg.engine.distributed import destroy_distributed, init_distributed, is_main_process
    from instseg.engine.plateau import plateau_summary
    from instseg.engine.runs import run_spec, save_spec
    from instseg.evaluation import evaluate

    params = load_params(args.params)
    train_cfg = dict(scale_params(params, args.scale)["train"])
    if args.max_iters is not None:
        train_cfg["max_iters"] = args.max_iters
    config = TrainConfig.from_dict(train_cfg, source=f"{args.params}: scales.{args.scale or params['scale']}.train")
    train_set = CocoInstanceDataset(args.train_json, args.train_images)
    mask_ids = None
    if args.mask_categories and args.mask_categories != "all":
        mask_ids = parse_mask_categories(args.mask_categories, train_set.categories)
        print(f"partial supervision: masks of categories {mask_ids} train the mask head; boxes train on all")
    spec = run_spec(params, args.scale, args.model, args.detector, train_set.label_to_category_id, mask_ids)
    out = Path(args.out)
    device = init_distributed()
    if is_main_process():
        save_spec(spec, out)
    model = spec.build_model()
    callbacks = []
    if args.val_json:  # the validation loss the plateau check reads (val_loss.csv)
        from instseg.engine.validation import ValidationLoss

        val_set = CocoInstanceDataset(args.val_json, args.val_images)
        callbacks.append(ValidationLoss.of_dataset(model, val_set, collate_fn, config.max_iters, out / "val_loss.csv",
                                                   batch_size=config.batch_size, seed=config.seed))
    summary = Trainer(model, train_set, config, out, collate_fn, device=device, callbacks=callbacks).train(
        resume=args.resume)
    main_process = is_main_process()
    destroy_distributed()
    if not main_process:
        return 0
    print(f"trained {summary['iterations']} iterations in {summary['seconds']:.1f} s -> {summary['model_final']}")
    if args.val_json:
        records = _predict_records(model, val_set, spec.label_to_category_id, config.batch_size, device=device)
        (out / "val_results.json").write_text(json.dumps(records))
        # a detector whose mask head trained on nothing (--mask-categories none) has no masks to score
        iou_types = ("bbox",) if spec.build.get("mask_labels") == [] else ("segm", "bbox")
        metrics: dict = {iou: evaluate(val_set.gt, records, iou) for iou in iou_types}
        plateau = callbacks[0].check(phase_end=max(config.lr_steps) if config.lr_steps else None)
        metrics["plateau"] = plateau.as_dict()
        (out / "val_metrics.json").write_text(json.dumps(metrics, indent=2))
        print(plateau_summary([plateau], "detector run"))
        _print_table([(f"{iou} {k}", v) for iou, m in metrics.items() for k, v in m.items()
                      if k in ("AP", "AP50", "AP75")])
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from instseg.data.coco_json import image_folder_coco
    from instseg.data.dataset import CocoInstanceDataset
    from instseg.engine.runs import load_run

    from instseg.models.detectors import mask_branch_of

    model, spec = load_run(args.checkpoint)
    mask_branch_of(model).return_maps = args.extra_maps  # occluder maps and contours only when written
    gt = args.json if args.json else image_folder_coco(args.images)
    dataset = CocoInstanceDataset(gt, args.images)
    viz = Path(args.viz) if args.viz else None
    if viz:
        viz.mkdir(parents=True, exist_ok=True)
    records = _predict_records(model, dataset, spec.label_to_category_id, args.batch_size, args.extra_maps, viz)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(records))
    print(f"wrote {len(records)} detections for {len(dataset)} images to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instseg", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build, check and describe datasets").add_subparsers(dest="data_command", required=True)
    build = data.add_parser("build", help="generate the OccludedShapes benchmark")
    add_build_arguments(build)
    build.set_defaults(func=cmd_data_build)

    sync = data.add_parser("sync", help="regenerate the benchmarks tracked by data.dvc and data_vis.dvc if they "
                                        "are missing or differ")
    sync.add_argument("--dvc-file", action="append", default=None,
                      help="only this .dvc file (repeatable; default: %s)" % " and ".join(DVC_FILES))
    sync.add_argument("--params", default="params.yaml")
    sync.add_argument("--workers", type=int, default=2)
    sync.set_defaults(func=cmd_data_sync)

    stats = data.add_parser("stats", help="statistics of every split in a benchmark directory")
    stats.add_argument("dir")
    stats.add_argument("--coco-occ-threshold", type=float, default=0.2)
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(func=cmd_data_stats)

    check = data.add_parser("check", help="validate a COCO JSON (and that its images exist)")
    check.add_argument("--json", required=True)
    check.add_argument("--images", default=None)
    check.set_defaults(func=cmd_data_check)

    tr = sub.add_parser("train", help="train a detector with a mask head on COCO-format data")
    tr.add_argument("--model", default="bcnet", help="a name under `models` in params.yaml")
    tr.add_argument("--detector", choices=("frcnn", "fcos"), default="frcnn")
    tr.add_argument("--train-json", required=True)
    tr.add_argument("--train-images", required=True)
    tr.add_argument("--val-json", default=None)
    tr.add_argument("--val-images", default=None)
    tr.add_argument("--out", required=True, help="run directory")
    tr.add_argument("--scale", default=None)
    tr.add_argument("--params", default="params.yaml")
    tr.add_argument("--max-iters", type=int, default=None, help="override the scale's max_iters")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    tr.add_argument("--mask-categories", default=None, metavar="SPEC",
                    help="partial supervision: the categories whose masks train the mask head (boxes train on "
                         "all): all (default), none, voc, nonvoc, a categories 'split' value such as A, or ids 1,5,9")
    tr.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="COCO results of a trained model")
    pr.add_argument("--checkpoint", required=True, help="a checkpoint file or a run directory")
    pr.add_argument("--images", required=True, help="image folder")
    pr.add_argument("--json", default=None, help="COCO JSON naming the images (default: every image in --images)")
    pr.add_argument("--out", required=True, help="results JSON")
    pr.add_argument("--viz", default=None, help="write one overlay PNG per image here")
    pr.add_argument("--batch-size", type=int, default=4)
    pr.add_argument("--extra-maps", action="store_true", help="also write occluder masks and contours (bilayer heads)")
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("eval", help="COCO AP of a results file")
    ev.add_argument("--gt", required=True)
    ev.add_argument("--dt", required=True)
    ev.add_argument("--iou-type", choices=("segm", "bbox"), default="segm")
    ev.add_argument("--amodal", action="store_true", help="use amodal masks/boxes as ground truth")
    ev.add_argument("--subset", choices=("all", "occ"), default="all", help="occ: the COCO-OCC rule")
    ev.add_argument("--coco-occ-threshold", type=float, default=0.2)
    ev.add_argument("--per-category", action="store_true")
    ev.add_argument("--by-occlusion", action="store_true", help="AP by occlusion-ratio bin")
    ev.add_argument("--out", default=None, help="write the metrics as JSON")
    ev.set_defaults(func=cmd_eval)

    from instseg.video.cli import add_video_commands

    add_video_commands(sub, data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        if args.debug:
            raise
        print(f"instseg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
