"""`pgw sim dlms|modbus`: run a meter simulator until Ctrl-C or SIGTERM.

Imports nothing heavy at module level: `pgw --help` builds this parser.
"""

import datetime
import signal
import sys
import threading


def add_arguments(p):
    kinds = p.add_subparsers(dest="sim_kind", required=True, metavar="KIND")
    d = kinds.add_parser("dlms", help="a DLMS/COSEM meter (gurux-dlms): HDLC or TCP wrapper, push",
                         description="A DLMS/COSEM meter on gurux-dlms's server classes.")
    _where(d, "HDLC", "IEC 62056-47 wrapper")
    d.add_argument("--push", metavar="PATH", help="serial path for the encrypted push")
    d.add_argument("--push-period", type=float, default=5.0, metavar="S",
                   help="seconds between pushes (real time; default 5)")
    d.add_argument("--push-framing", choices=("hdlc", "mbus", "raw"), default="hdlc",
                   help="HDLC UI frames, M-Bus long frames, or bare APDUs (default hdlc)")
    d.add_argument("--serial-number", type=int, default=12345678)
    d.add_argument("--system-title", metavar="HEX", help="8 bytes (default 'PGW' + serial)")
    d.add_argument("--ek", metavar="HEX", help="global unicast encryption key, 16 bytes")
    d.add_argument("--ak", metavar="HEX", help="authentication key, 16 bytes")
    d.add_argument("--password", default="12345678", help="LLS password of client 17")
    _common(d)
    m = kinds.add_parser("modbus", help="Modbus devices (pymodbus): SDM630, SunSpec inverter, wallbox",
                         description="Modbus devices on pymodbus servers, several units on one bus.")
    _where(m, "Modbus RTU", "Modbus TCP")
    m.add_argument("--devices", default="sdm630:1,sunspec:2,wallbox:3",
                   help="KIND:UNIT list; kinds sdm630, sunspec, wallbox (default %(default)s)")
    _common(m)


def _where(p, serial_what, tcp_what):
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--serial", metavar="PATH",
                       help="serve %s on this serial device or pty (e.g. a virtual board's "
                            "<link>.rs485)" % serial_what)
    where.add_argument("--tcp", type=int, metavar="PORT", help="serve %s on this TCP port" % tcp_what)
    p.add_argument("--host", default="127.0.0.1", help="TCP address to listen on")
    p.add_argument("--baud", type=int, default=9600, help="serial baud rate (default 9600)")


def _common(p):
    p.add_argument("--seed", type=int, default=1, help="household seed (default 1)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--start", metavar="ISO", help="simulated start time (default now), e.g. "
                                                  "2025-06-21T10:00:00+02:00")


def _clock(args):
    from host_tools.sim.household import UTC, Clock

    start = None
    if args.start:
        start = datetime.datetime.fromisoformat(args.start)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    return Clock(start=start, speed=args.speed)


def _hex(value, n, name):
    if value is None:
        return None
    b = bytes.fromhex(value)
    if len(b) != n:
        raise ValueError("%s must be %d bytes" % (name, n))
    return b


def run(args):
    stop = threading.Event()

    def on_term(_signum, _frame):
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        clock = _clock(args)
        stoppers = (_run_dlms if args.sim_kind == "dlms" else _run_modbus)(args, clock)
        print("simulated time %s, %gx; Ctrl-C to stop" % (clock.now().isoformat(timespec="seconds"),
                                                         clock.speed), flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        for s in stoppers:
            s()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_dlms(args, clock):
    from host_tools.sim import dlms_meter as dm

    kw = {"clock": clock, "seed": args.seed, "serial_number": args.serial_number,
          "password": args.password.encode()}
    for key, n in (("system_title", 8), ("ek", 16), ("ak", 16)):
        value = _hex(getattr(args, key), n, key.replace("_", " "))
        if value is not None:
            kw[key] = value
    meter = dm.Meter(**kw)
    stoppers = []
    if args.serial:
        srv = dm.SerialServer(meter, args.serial, args.baud).start()
        where = "HDLC on %s (server address %d/%d)" % (args.serial, meter.logical_address,
                                                       meter.physical_address)
    else:
        srv = dm.TcpServer(meter, args.tcp, args.host).start()
        where = "TCP wrapper on %s:%d (server wPort %d)" % (args.host, srv.port, meter.logical_address)
    stoppers.append(srv.stop)
    print("DLMS meter %s, system title %s: %s" % (meter.serial_number, meter.system_title.hex().upper(),
                                                   where))
    print("  clients: 16 public; 17 LLS password %r; 1 HLS-GMAC (suite 0)" % args.password)
    print("  keys: EK %s  AK %s" % (meter.ek.hex().upper(), meter.ak.hex().upper()))
    if args.push:
        push = dm.PushSender(meter, args.push, args.push_period, args.push_framing, args.baud).start()
        stoppers.append(push.stop)
        print("  push: general-glo-ciphered Data-Notification every %gs to %s (%s framing)"
              % (args.push_period, args.push, args.push_framing))
    return stoppers


def _run_modbus(args, clock):
    from host_tools.sim.modbus_devices import ModbusSimulator

    sim = ModbusSimulator(args.devices, clock=clock, seed=args.seed)
    if args.serial:
        sim.start_serial(args.serial, args.baud)
        where = "RTU on %s at %d baud" % (args.serial, args.baud)
    else:
        sim.start_tcp(args.tcp, args.host)
        where = "TCP on %s:%d" % (args.host, sim.port)
    print("Modbus %s: %s" % (where, sim.describe()))
    return [sim.stop]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="sim")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
