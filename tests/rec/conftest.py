from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from livemind.rec.data.prepare import RecData
from livemind.rec.data.segments import SegmentFrame
from livemind.rec.data.watch import WatchLog
from livemind.rec.live.rooms import LiveRooms

VERSION = "test-v1"


@pytest.fixture(scope="session")
def tiny_rec(tiny_world):
    """The tiny world with random 2-level SIDs (codebook 8) and a split 16 hours in."""
    _, world = tiny_world
    frame = SegmentFrame.from_world(world)
    codes = np.random.default_rng(0).integers(0, 8, size=(len(frame), 2))
    log = WatchLog.from_world(world, SimpleNamespace(version=VERSION), codes=codes, frame=frame)
    live = LiveRooms(world, frame, codes, VERSION)
    split = world.meta["config"]["start_time"] + 16 * 3600
    return RecData(world, frame, codes, log, log, live, live, split, log.examples(end=split, min_history=1),
                   log.examples(start=split))
