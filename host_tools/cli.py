"""`pgw`: the Prosumer Gateway host tool.

One table maps each command to (argument builder, handler), as mpremote
does; handlers live next to the code they drive and import lazily, so
`pgw console` does not pay for the deploy machinery.
"""

import argparse
import sys


def _vboard_args(p):
    p.add_argument("--root", required=True, help="directory that is the board's flash, mounted as /")
    p.add_argument("--link", required=True, help="path of the console symlink to create (like /dev/ttyACM0)")
    p.add_argument("--board", default="virtual", help="board definition (name or .json path); default virtual")
    p.add_argument("--heap-kb", type=int, help="override the board file's heap budget (32-bit KB)")
    p.add_argument("--uid", help="machine.unique_id() as hex (default: derived from --root)")


def _vboard(args):
    from host_tools.vboard.supervisor import VirtualBoard

    VirtualBoard(args.root, args.link, board=args.board, heap_kb=args.heap_kb, uid=args.uid).run()
    return 0


def _gpio_args(p):
    p.add_argument("--link", required=True, help="the virtual board's console link")
    p.add_argument("--set", action="append", default=[], metavar="ROLE=VALUE",
                   help="set an input (button, ev_pilot_feedback, or a gpio number)")
    p.add_argument("--watch", action="store_true", help="print events as they happen until Ctrl-C")


def _gpio(args):
    import json

    from host_tools.vboard import GpioChannel

    ch = GpioChannel(args.link)
    for item in args.set:
        role, _, value = item.partition("=")
        ch.set_input(role, int(value))
    since = 0
    if not args.watch:
        for ev in ch.events:
            print(json.dumps(ev))
        return 0
    try:
        while True:
            ev = ch.wait_for(lambda e: True, timeout=3600, since=since)
            since = ch.events.index(ev) + 1
            print(json.dumps(ev), flush=True)
    except KeyboardInterrupt:
        return 0


def _deploy_args(p):
    p.add_argument("--port", required=True, help="serial port of the board (or a virtual board's link)")
    p.add_argument("--board", help="board definition (name or .json path); default: the one a virtual "
                   "board emulates, or the board's /board.json from an earlier deploy")
    p.add_argument("--force", action="store_true", help="copy every file even if its hash matches")
    p.add_argument("--no-reset", action="store_true", help="do not reset the board at the end")
    p.add_argument("--no-romfs", action="store_true",
                   help="copy the .mpy files to the filesystem even if the board has a ROMFS partition "
                   "(and erase the image there)")


def _deploy(args):
    from host_tools.deploy import deploy

    deploy(args.port, args.board, force=args.force, reset=not args.no_reset, romfs=not args.no_romfs)
    return 0


def _flash_args(p):
    from host_tools.flash import add_arguments

    add_arguments(p)


def _flash(args):
    from host_tools.flash import main

    return main(args)


def _console_args(p):
    p.add_argument("--port", required=True, help="serial port of the board (or a virtual board's link)")
    p.add_argument("--baud", type=int, default=115200)


def _console(args):
    from host_tools.console import run_console

    return run_console(args.port, args.baud)


def _sim_args(p):
    from host_tools.sim.runner import add_arguments

    add_arguments(p)


def _sim(args):
    from host_tools.sim.runner import run

    return run(args)


def _provision_args(p):
    from host_tools.provision import add_arguments

    add_arguments(p)


def _provision(args):
    from host_tools.provision import run

    return run(args)


def _hub_args(p):
    from host_tools.hub.service import add_arguments

    add_arguments(p)


def _hub(args):
    from host_tools.hub.service import run

    return run(args)


def _ledger_args(p):
    from host_tools.hub.audit import add_arguments

    add_arguments(p)


def _ledger(args):
    from host_tools.hub.audit import run

    return run(args)


def _ota_args(p):
    from host_tools.ota import add_arguments

    add_arguments(p)


def _ota(args):
    from host_tools.ota import run

    return run(args)


def _hil_args(p):
    from host_tools.hil.runner import add_arguments

    add_arguments(p)


def _hil(args):
    from host_tools.hil.runner import run

    return run(args)


COMMANDS = {
    "vboard": (_vboard_args, _vboard, "run a virtual board: the firmware on MicroPython behind a pty"),
    "gpio": (_gpio_args, _gpio, "watch a virtual board's GPIO channel and set its inputs"),
    "flash": (_flash_args, _flash, "put MicroPython on a board (esptool, UF2 or picotool), then deploy"),
    "deploy": (_deploy_args, _deploy, "compile firmware/ and lib/ to .mpy and copy them to a board"),
    "console": (_console_args, _console, "technician console on a board's USB serial"),
    "sim": (_sim_args, _sim, "meter simulators for tests and the demo: sim dlms | sim modbus"),
    "provision": (_provision_args, _provision, "make a deployed board a community's gateway: its key on the board, "
                  "registered with the hub by an installer key, its config; provision keygen | decommission"),
    "hub": (_hub_args, _hub, "the neighbourhood hub: checks, stores and acknowledges the gateways' messages"),
    "ledger": (_ledger_args, _ledger, "audit the hub's ledger: ledger verify DB | ledger export DB --out FILE"),
    "ota": (_ota_args, _ota, "signed update bundles: ota keygen | ota build | ota show"),
    "hil": (_hil_args, _hil, "hardware-in-the-loop cases on a virtual or a real board, with a JUnit report"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pgw", description="Prosumer Gateway host tool")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (build, handler, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        build(p)
        p.set_defaults(handler=handler)
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        return 130
    except (OSError, RuntimeError, ValueError) as e:
        print(f"pgw {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
