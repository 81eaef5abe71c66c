"""Zones and lines: where in a source's picture tracks enter, stay, stand still and cross.

`ZoneMonitor` follows one source's tracks through its configured places frame by frame;
`ZoneSettings` and `LineSettings` are the `zones` and `lines` config sections.
"""

from .monitor import ZoneMonitor
from .settings import LineSettings, ZoneSettings, check_places

__all__ = ["LineSettings", "ZoneMonitor", "ZoneSettings", "check_places"]
