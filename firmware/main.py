# main.py starts the gateway app, unless boot.py chose safe mode.
import gateway.boot

if gateway.boot.safe_reason:
    print("pgw: SAFE MODE (%s): app not started, REPL ready" % gateway.boot.safe_reason)
else:
    import gateway.app

    gateway.app.main()
