"""``hj212_flag``: a severity per reading from its HJ 212-2017 data flag.

Equipment states (stopped, maintenance, fault...) become equipment alarms here
instead of pollution or process alarms; severity 0 rows clear them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import numpy as np

from detectors.base import DetectorContext, FLAG_CODE, HJ212_FLAGS, ReadingBatch, Scores, Stateless
from detectors.views import views

MEASURE: Final = "hj212_flag"
MAX_SEVERITY: Final = 9
# N normal; F stopped, M maintenance, S manual input, C calibration: attention;
# D fault, T over range, B communication fault: the data cannot be trusted.
DEFAULT_SEVERITY_BY_FLAG: Final[Mapping[str, int]] = MappingProxyType(
    {"N": 0, "F": 1, "M": 1, "S": 1, "C": 1, "D": 2, "T": 2, "B": 2}
)


class Hj212Flag(Stateless):
    """One row per reading (its first row in the batch), score = flag severity."""

    def __init__(
        self, context: DetectorContext, *, severity_by_flag: Mapping[str, int] | None = None
    ) -> None:
        overrides = {} if severity_by_flag is None else dict(severity_by_flag)
        _validate(overrides)
        self.severity_by_flag = {**DEFAULT_SEVERITY_BY_FLAG, **overrides}
        # Codes outside HJ 212 should not get past the decoder; if one does, treat
        # it as the worst configured state rather than crash every sensor's agent.
        worst = max(self.severity_by_flag.values())
        self._severity_of_code = np.full(256, worst, np.float64)
        for flag, severity in self.severity_by_flag.items():
            self._severity_of_code[FLAG_CODE[flag]] = severity

    def score_and_update(self, batch: ReadingBatch) -> Scores:
        # Every reading is returned, severity 0 included: routes clear alarms on it.
        rows = views(batch).first_rows()  # each reading's first row, ascending (shared)
        return Scores(rows=rows, score=self._severity_of_code[batch.flag[rows]], measure=MEASURE)


def _validate(severity_by_flag: Mapping[str, int]) -> None:
    unknown = sorted(set(severity_by_flag) - set(HJ212_FLAGS))
    if unknown:
        msg = f"severity_by_flag: {unknown} are not HJ 212 flags; valid: {list(HJ212_FLAGS)}"
        raise ValueError(msg)
    for flag, severity in severity_by_flag.items():
        # bool is an int subclass; True as a severity is a config mistake.
        is_int = isinstance(severity, int) and not isinstance(severity, bool)
        if not is_int or not 0 <= severity <= MAX_SEVERITY:
            msg = f"severity_by_flag[{flag!r}]: {severity!r} is not an int in 0..{MAX_SEVERITY}"
            raise ValueError(msg)
