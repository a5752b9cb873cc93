"""One rank of the DDP test: ``torchrun --nproc_per_node 2 tests/ddp_worker.py OUT_DIR CONFIG_JSON``.

Trains the toy model with the engine (rank 0 writes OUT_DIR: metrics, checkpoints) and writes
``OUT_DIR/seen_rank{r}.json``, the dataset indices this rank loaded, so the test can check that
each rank trained on its own share of every global batch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine_toy import ToyDataset, collate, make_model  # the script's folder is on sys.path

from instseg.engine import TrainConfig, Trainer, destroy_distributed, init_distributed, rank


class RecordingDataset(ToyDataset):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def __getitem__(self, index: int):
        self.seen.append(int(index))
        return super().__getitem__(index)


def main(out_dir: str, config_json: str) -> None:
    device = init_distributed()
    config = TrainConfig.from_dict(json.loads(config_json))
    dataset = RecordingDataset()
    try:
        Trainer(make_model(0), dataset, config, out_dir, collate, device).train()
        Path(out_dir, f"seen_rank{rank()}.json").write_text(json.dumps(dataset.seen))
    finally:
        destroy_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:])
