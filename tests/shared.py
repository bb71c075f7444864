"""Where the team's shared folder is (datasets, schemas): tests may read it, the product never.

It is ``../shared`` beside the repository in the usual layout. A clone elsewhere (e.g. a CI
checkout under /tmp) finds it through ``CITYOPS_SHARED_DIR`` or the machine's /work/shared.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    candidates = [os.environ.get("CITYOPS_SHARED_DIR", ""), str(REPO.parent / "shared"), "/work/shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "schemas").is_dir():
            return Path(candidate)
    msg = f"the shared folder is not at any of {[c for c in candidates if c]}; set CITYOPS_SHARED_DIR"
    raise FileNotFoundError(msg)
