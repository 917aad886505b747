# main.py starts the gateway app, unless boot.py chose safe mode. Like
# boot.py it stays source on the filesystem: an update never replaces it.
import gateway.boot

if gateway.boot.safe_reason:
    print("pgw: SAFE MODE (%s): app not started, REPL ready" % gateway.boot.safe_reason)
elif gateway.boot.config_kept:
    # Checking the config interned the schema's names for good: start
    # again, and the next boot reads the checked config it kept.
    print("pgw: config checked and kept; soft reboot")
    import machine

    machine.soft_reset()
else:
    # A trial version's start is counted before the app runs: the next boot
    # rolls back unless the app commits (boot.py, docs/ota.md).
    trial = globals().get("_ota_next") is not None
    if trial:
        _ota_save(_ota_next)  # noqa: F821 (boot.py's)
    globals().pop("_ota_save", None)
    globals().pop("_ota_next", None)
    try:
        import gateway.app

        gateway.app.main()  # returns only after the app crashed
    except Exception as e:
        if not trial:
            raise
        import sys

        sys.print_exception(e)
    if trial:
        # A trial whose app stopped has failed: reset now, and the next boot rolls back.
        print("pgw: trial version stopped; reset to roll back")
        import machine

        machine.reset()
