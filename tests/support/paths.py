"""Where the third-party test material lives: ``../shared/data`` beside the project root,
or wherever ``YILIAN_SHARED_DATA`` points (a CI checkout elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("YILIAN_SHARED_DATA") or ROOT.parent / "shared" / "data")
