"""Where livemind finds things outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Public evaluation data: $LIVEMIND_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("LIVEMIND_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"
