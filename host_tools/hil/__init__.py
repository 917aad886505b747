"""Hardware-in-the-loop: `pgw hil` runs the same cases against a virtual
board or a real one (docs/hil.md).

    runner.py   discovers the cases, runs them, prints a line per case; `pgw hil`
    target.py   the board under test: VirtualTarget (started here) or HardwareTarget
    board.py    the board half of a case: code on the raw REPL, synchronised by markers
    case.py     what a case declares (@needs) and gets (Hil)
    junit.py    the JUnit XML report
    cases/      the cases: console, meters, gpio, power, ota
"""
