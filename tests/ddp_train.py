"""Run training/lora.train under torchrun (the multi-process test in test_lora.py starts this).

    torchrun --nproc_per_node 2 --master_port PORT tests/ddp_train.py BASE_MODEL DATA_DIR OUT_DIR

Each rank writes ``OUT_DIR/rank-N.json`` (rank, world size, steps) so the test can see that
every process ran; rank 0 also writes the adapter and metrics.json (world_size recorded there).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from training.config import load_train_config  # noqa: E402
from training.lora import train  # noqa: E402


def main() -> None:
    base, data, out = sys.argv[1:4]
    config = load_train_config(None, [f"base_model={base}", f"output_dir={out}", "max_steps=2", "batch_size=2",
                                      "min_examples=1", "logging_steps=1", "save_steps=100", "eval_steps=100",
                                      "max_length=512", "threads=1"])
    result = train(config, Path(data))
    rank = int(os.environ.get("RANK", "0"))
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank-{rank}.json").write_text(json.dumps(
        {"rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1")), "steps": result.metrics["steps"],
         "metrics_world_size": result.metrics["world_size"]}))


if __name__ == "__main__":
    main()
