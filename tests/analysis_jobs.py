"""The tiny TD3 job the analysis tests share (trained once per pytest process).

2 seeds, 20-step episodes, 16-unit nets, checkpoints at env steps 60 and 120: the
smallest job that has same-run pairs, different-run pairs and a replay buffer for the
td3 operator. Each test module opens it for its own tables.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from retland.train.config import TD3Config, TrainConfig

TINY_TD3 = TrainConfig(
    env="hopper", seeds=2, total_steps=120, checkpoints=(60, 120), eval_every=60, horizon=20,
    agent=TD3Config(hidden=(16, 16), batch_size=8, learning_starts=40, buffer_size=120),
)


@functools.lru_cache(maxsize=None)
def tiny_job():
    """(warehouse, TrainResult) in a temporary folder."""
    from retland.train.job import train
    from retland.warehouse import Warehouse

    wh = Warehouse.open(Path(tempfile.mkdtemp(prefix="retland-analyses-")) / "wh")
    return wh, train(TINY_TD3, wh)
