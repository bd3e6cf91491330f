"""Offline calibration: datasets, activation collection, probe training, conformal fitting.

The first piece is the clearly labelled stand-in probe used before a calibrated probe exists.
"""

from adapters.defaults import build_stand_in_probe
from calibration.steering import build_steering_vector, mean_difference

__all__ = ["build_stand_in_probe", "build_steering_vector", "mean_difference"]
