# boot.py runs first at every boot and soft reboot: actuators to their
# fail-safe state, then the safe-mode decision. Kept tiny: the work is in
# gateway/boot.py, compiled to .mpy.
try:
    import gateway.boot

    gateway.boot.run()
except Exception as e:  # a broken install must still leave a usable REPL
    import sys

    sys.print_exception(e)
    print("pgw: boot failed; app will not start")
