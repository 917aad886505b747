# main.py starts the gateway app, unless boot.py chose safe mode.
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
    import gateway.app

    gateway.app.main()
