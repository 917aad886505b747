"""The HIL cases, one module per capability. Each `case_*(hil)` is the host
half; its board half is MicroPython source in the same module, run on the
board through `hil.board_half()`. See host_tools/hil/case.py."""
