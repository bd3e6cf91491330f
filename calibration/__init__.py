"""Offline calibration: datasets, activation collection, probe training, conformal fitting.

The first piece is the clearly labelled stand-in probe used before a calibrated probe exists.
"""

from calibration.stand_in import build_stand_in_probe

__all__ = ["build_stand_in_probe"]
