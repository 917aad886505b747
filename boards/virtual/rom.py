# The virtual board's "ROM": what a port's C main() does before the REPL.
#
# `pgw vboard` runs `micropython -X heapsize=.. -i rom.py`. This mounts
# the board's flash directory as "/" and its ROM partition (if it holds a
# ROMFS image) at "/rom", runs boot.py and (after a power-on
# or friendly soft reboot) main.py the way ports/esp32/main.c does, then
# hands over to the interpreter's own REPL.


def _rom():
    import os
    import sys

    # The stand-ins as the supervisor compiled them (.mpy), not this
    # directory's sources: compiling here would leave the heap full of holes.
    sys.path[0] = os.getenv("PGW_VBOARD_STANDINS") or sys.path[0]
    # The ROM partition first: one large buffer, while the heap is empty.
    import vboard_rom

    # The stand-ins live outside the flash, so import them before mounting.
    import vboard_link
    import machine
    import network
    from flash import HostDirFlash

    if os.getenv("PGW_VBOARD_PARTITIONS"):  # ESP32 OTA partitions: the port's `esp32` module
        import esp32
    vboard_link.poll()  # opens the link: its socket is the board's too
    # All the heap holds so far is what a board has in flash: keep it, and
    # all but the board's budget, out of the firmware's heap.
    vboard_rom.hold()

    os.umount("/")
    os.mount(HostDirFlash(os.getenv("PGW_VBOARD_ROOT")), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    if vboard_rom.mount():  # as a port's _boot.py does: the ROM's modules come first
        sys.path[:0] = ["/rom", "/rom/lib"]
    # Only now may the host's keys (and Ctrl-C) reach the interpreter. A
    # Ctrl-C typed while the board was resetting is handed over here, not as
    # a signal: the interpreter does not see a SIGINT this early reliably.
    interrupted = vboard_link.request("mounted", "go") == "go interrupt"

    scripts = ("boot.py",)
    if os.getenv("PGW_VBOARD_MODE") != "raw" and not interrupted:
        scripts = ("boot.py", "main.py")  # a raw-REPL soft reboot, or a Ctrl-C, skips main.py
    if interrupted:
        print("KeyboardInterrupt: main.py skipped")
    for name in scripts:
        try:
            os.stat(name)
        except OSError:
            continue
        try:
            with open(name) as f:
                code = compile(f.read(), name, "exec")
            exec(code, globals())
            code = None  # boot.py's bytecode is garbage once it has run
        except SystemExit:
            # On a board, SystemExit from boot.py or main.py is a soft reboot.
            machine.soft_reset()
        except KeyboardInterrupt as e:
            # Ctrl-C asks for the REPL: do not go on to main.py.
            sys.print_exception(e)
            break
        except Exception as e:  # printed, as a port prints it, then on to main.py / the REPL
            sys.print_exception(e)
    vboard_link.request("ready", "go")


_rom()
del _rom
