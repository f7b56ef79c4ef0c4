"""Where the tests find the shared real data sets."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
COPIES = Path(__file__).resolve().parent / "data"


def shared_data(name: str) -> Path:
    """The shared data file ``name`` if this working copy sits next to it, else our copy.

    When both exist they must be identical: the copy is only a stand-in for clones made
    elsewhere, never a different data set.
    """
    copy = COPIES / name
    shared = SHARED / name
    if shared.is_file():
        digest = hashlib.sha256(shared.read_bytes()).hexdigest()
        assert digest == hashlib.sha256(copy.read_bytes()).hexdigest(), (
            f"tests/data/{name} differs from the shared data set; copy it again")
        return shared
    return copy
