"""The virtual board: the firmware on real MicroPython, reached like a USB board."""

from host_tools.vboard.channel import ChannelError, GpioChannel  # noqa: F401
from host_tools.vboard.process import VirtualBoardProcess  # noqa: F401
