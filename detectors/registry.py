"""Detector kinds by name, and building one from a topology entry.

``kind`` in topology.yaml names a key of ``DETECTORS``; ``params`` are the
class's keyword-only constructor arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from detectors.aqi import AqiHj633
from detectors.base import DetectorContext, Detector
from detectors.counter_decrease import CounterDecrease
from detectors.cusum import TwoSidedCusum
from detectors.ensemble import Ensemble
from detectors.ewma_z import EwmaZScore
from detectors.hj212_flag import Hj212Flag
from detectors.idle_hours import WorkingHoursIdle
from detectors.load_profile import LoadProfile
from detectors.no_signal import NoSignal
from detectors.out_of_range import OutOfRange
from detectors.quantity_value import QuantityValue
from detectors.rate_of_change import RateOfChange
from detectors.rise_rate import RiseRate
from detectors.robust_z import RobustZScore
from detectors.seasonal import SeasonalBaseline
from detectors.stuck import StuckValue
from detectors.supply_voltage import SupplyVoltage
from detectors.traffic_pair import TrafficPair

DETECTORS: Final[dict[str, type[Detector]]] = {
    "aqi_hj633": AqiHj633,
    "quantity_value": QuantityValue,
    "hj212_flag": Hj212Flag,
    "stuck": StuckValue,
    "no_signal": NoSignal,
    "out_of_range": OutOfRange,
    "supply_voltage": SupplyVoltage,
    "counter_decrease": CounterDecrease,
    "rise_rate": RiseRate,
    "idle_in_hours": WorkingHoursIdle,
    "traffic_pair": TrafficPair,
    "robust_z": RobustZScore,
    "ewma_z": EwmaZScore,
    "cusum": TwoSidedCusum,
    "rate_of_change": RateOfChange,
    "seasonal": SeasonalBaseline,
    "load_profile": LoadProfile,
    "ensemble": Ensemble,
}

# Alarm categories by detector kind (routes may override with `category:`); the
# default inhibition mutes a sensor's value alarms while it has a fault alarm:
# - fault: the instrument's readings cannot be trusted (an HJ 212 non-N flag, a
#   frozen value);
# - offline: no readings at all. It mutes nothing: a value alarm from the sensor
#   proves it is back, and muting it until the no-signal alarm's hold time ran
#   out would delay exactly the alarm that matters;
# - quality: a suspicious pattern of one quantity (out of its band, a register
#   going down) that says nothing about the sensor's other readings;
# - value: what is measured (everything else).
DETECTOR_CATEGORIES: Final[dict[str, str]] = {
    "hj212_flag": "fault", "stuck": "fault", "no_signal": "offline",
    "out_of_range": "quality", "supply_voltage": "quality", "counter_decrease": "quality",
}


def build_detector(kind: str, context: DetectorContext, params: Mapping[str, Any]) -> Detector:
    """Instantiate ``DETECTORS[kind]`` with ``params``; ValueError names what is wrong."""
    cls = DETECTORS.get(kind)
    if cls is None:
        msg = f"kind: unknown {kind!r}; valid: {sorted(DETECTORS)}"
        raise ValueError(msg)
    _check_params(kind, cls, params)
    # type[Protocol] has no constructor signature for mypy; _check_params bound it.
    factory = cast(Callable[..., Detector], cls)
    return factory(context, **params)


def detector_params(cls: type) -> list[str]:
    """The names a topology entry may put in ``params`` for ``cls``."""
    kw_only = inspect.Parameter.KEYWORD_ONLY
    return [p.name for p in inspect.signature(cls).parameters.values() if p.kind is kw_only]


def _check_params(kind: str, cls: type, params: Mapping[str, Any]) -> None:
    valid = detector_params(cls)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        msg = f"{kind}: unknown parameter(s) {unknown}; valid: {valid}"
        raise ValueError(msg)
    try:
        inspect.signature(cls).bind(None, **params)  # None stands in for the context
    except TypeError as exc:  # e.g. a required parameter is missing
        msg = f"{kind}: {exc}; valid: {valid}"
        raise ValueError(msg) from None
