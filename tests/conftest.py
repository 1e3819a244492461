from __future__ import annotations

import pytest

from livemind.paths import shared_data_dir
from livemind.world.simulator import LiveWorld, WorldConfig

TINY = WorldConfig(seed=3, n_viewers=400, n_streamers=30, days=1.0, step_seconds=600.0, question_rate=0.2)


@pytest.fixture(scope="session")
def tiny_world():
    """A tiny simulated world (structure + one day of log), shared read-only by tests."""
    world = LiveWorld(TINY)
    data = world.simulate()
    return world, data


@pytest.fixture(scope="session")
def shared_data():
    """The public evaluation data (../shared/data or $LIVEMIND_DATA); tests that read it skip without it."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"public evaluation data not found at {root} (set LIVEMIND_DATA to its folder)")
    return root
