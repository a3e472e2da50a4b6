"""Media plane: forwards each publisher's RTP to every other participant, never decoding it."""

from .config import SfuConfig
from .sfu import Sfu

__all__ = ["Sfu", "SfuConfig"]
