"""segcam: person segmentation and background replacement for live video."""

from __future__ import annotations

__version__ = "0.1.0"
