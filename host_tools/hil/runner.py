"""`pgw hil`: run the hardware-in-the-loop cases against a board, print one
line per case, write a JUnit report.

    pgw hil --board virtual [--junit out.xml]                   # starts its own virtual board
    pgw hil --port /dev/ttyUSB0 --board esp32_devkitc \\
            --meter-port /dev/ttyUSB1 --power-cmd "uhubctl -l 1-1 -p 2 -a cycle" --junit out.xml

Cases are the `case_*` functions of the modules in host_tools/hil/cases/,
modules in their ORDER, functions in source order. A case whose needs the
target lacks is SKIPPED with the target's reason; one that raises Skip
likewise. An AssertionError (a check, a timeout waiting for the board) is
FAILED, any other exception ERROR. The exit status is 1 when any case
failed or erred, or the board could not be set up.

Imports nothing heavy at module level: `pgw --help` builds this parser.
"""

import importlib
import pkgutil
import sys
import time
import traceback

CASES_PACKAGE = "host_tools.hil.cases"


class Case:
    def __init__(self, module, fn):
        self.module = module.__name__.rsplit(".", 1)[1]
        self.fn = fn
        self.name = fn.__name__[len("case_"):]
        self.needs = getattr(fn, "hil_needs", ())
        self.doc = (fn.__doc__ or "").strip().split("\n")[0]

    @property
    def classname(self):
        return "hil.%s" % self.module

    @property
    def id(self):
        return "%s::%s" % (self.module, self.name)


def discover(select=None):
    """Every case, modules by their ORDER then name, functions in source order.
    `select`: keep the cases whose id holds one of these substrings."""
    pkg = importlib.import_module(CASES_PACKAGE)
    modules = [importlib.import_module("%s.%s" % (CASES_PACKAGE, m.name))
               for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    modules.sort(key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
    cases = []
    for m in modules:
        fns = [f for n, f in vars(m).items() if n.startswith("case_") and callable(f)]
        fns.sort(key=lambda f: f.__code__.co_firstlineno)
        cases.extend(Case(m, f) for f in fns)
    if select:
        cases = [c for c in cases if any(s in c.id for s in select)]
    return cases


def run_case(target, c, verbose=False):
    """One case -> its CaseResult."""
    from host_tools.hil import junit
    from host_tools.hil.board import BoardHalfError, BoardSkip
    from host_tools.hil.case import Hil, Skip
    from host_tools.vboard import ChannelError

    for need in c.needs:
        reason = target.lacks(need)
        if reason:
            return junit.CaseResult(c.classname, c.name, junit.SKIPPED, message=reason)
    hil = Hil(target, verbose=verbose)
    t0 = time.monotonic()
    outcome, message, detail, kind = junit.PASSED, "", "", ""
    try:
        c.fn(hil)
    except (Skip, BoardSkip) as e:
        outcome, message = junit.SKIPPED, str(e) or "skipped by the case"
    except (AssertionError, ChannelError) as e:
        outcome, kind = junit.FAILED, type(e).__name__
        message = (str(e).strip().splitlines() or [kind])[0]
        detail = traceback.format_exc()
        if isinstance(e, BoardHalfError) and e.detail:
            detail += "\n--- the board ---\n" + e.detail
    except Exception as e:  # a broken case or rig: reported, the run goes on
        outcome, kind = junit.ERROR, type(e).__name__
        message = "%s: %s" % (kind, (str(e).strip().splitlines() or [""])[0])
        detail = traceback.format_exc()
    finally:
        hil.close()
    return junit.CaseResult(c.classname, c.name, outcome, time.monotonic() - t0, message, detail,
                            hil.output(), kind)


def summary_line(r):
    """`meters::modbus_rtu_meter PASSED [2.1 s]`, as pytest -v prints a test."""
    line = "%s PASSED" % r.id.replace("hil.", "", 1) if r.outcome == "passed" else \
        "%s %s (%s)" % (r.id.replace("hil.", "", 1), r.outcome.upper(), r.message)
    return "%s [%.1f s]" % (line, r.seconds) if r.outcome != "skipped" else line


def run_suite(target, cases, out=print, verbose=False):
    """Set the target up, run the cases -> [CaseResult]. A target that cannot
    be set up is one ERROR result (`hil.setup::target`), and nothing runs."""
    from host_tools.hil import junit

    t0 = time.monotonic()
    try:
        target.setup()
    except Exception as e:
        target.close()
        r = junit.CaseResult("hil.setup", "target", junit.ERROR, time.monotonic() - t0,
                             "%s: %s" % (type(e).__name__, e), traceback.format_exc(), kind=type(e).__name__)
        out(summary_line(r))
        return [r]
    results = []
    try:
        for c in cases:
            r = run_case(target, c, verbose=verbose)
            out(summary_line(r))
            results.append(r)
    finally:
        target.close()
    return results


def totals_line(results, seconds):
    n = {}
    for r in results:
        n[r.outcome] = n.get(r.outcome, 0) + 1
    parts = ["%d %s" % (n[k], k) for k in ("passed", "failed", "error", "skipped") if n.get(k)]
    return "== %s in %.1f s ==" % (", ".join(parts) or "no cases", seconds)


def add_arguments(p):
    p.add_argument("--port", help="the board's USB serial port; leave out (or `vboard`) with --board virtual: "
                                  "the runner starts a virtual board of its own")
    p.add_argument("--board", default="virtual", help="board definition (name or .json path); default virtual")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report here")
    p.add_argument("--meter-port", metavar="PATH",
                   help="hardware: the USB-RS485 adapter on the board's RS-485 bus, where the host serves meters")
    p.add_argument("--power-cmd", metavar="CMD",
                   help="hardware: a shell command that cuts the board's power and restores it (a relay, "
                        "`uhubctl ... -a cycle`)")
    p.add_argument("--interactive", action="store_true",
                   help="hardware: ask the technician to cut and restore the power")
    p.add_argument("--pin", metavar="DIGITS", help="hardware: the board's technician PIN, for the cases that log in")
    p.add_argument("--no-deploy", action="store_true", help="test the firmware already on the board")
    p.add_argument("--work", metavar="DIR", help="virtual: keep the board's flash and log in DIR")
    p.add_argument("-k", dest="select", action="append", metavar="TEXT",
                   help="run only the cases whose id (module::name) holds TEXT; repeatable")
    p.add_argument("--list", action="store_true", help="list the cases and what each needs, run nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="print each case's log as it runs")


def make_target(args, log=print):
    from host_tools.hil.target import HardwareTarget, VirtualTarget

    if args.board == "virtual":
        if args.port not in (None, "vboard"):
            raise ValueError("with --board virtual leave out --port (or pass --port vboard): "
                             "the runner starts a virtual board of its own")
        if args.meter_port or args.power_cmd or args.interactive or args.pin:
            raise ValueError("--meter-port, --power-cmd, --interactive and --pin are for real boards")
        return VirtualTarget(args.work, deploy=not args.no_deploy, log=log)
    if not args.port or args.port == "vboard":
        raise ValueError("a real board needs --port (e.g. /dev/ttyUSB0)")
    return HardwareTarget(args.port, args.board, meter_port=args.meter_port, power_cmd=args.power_cmd,
                          interactive=args.interactive, deploy=not args.no_deploy, log=log, pin=args.pin)


def run(args):
    from host_tools.hil import junit

    cases = discover(args.select)
    if args.list:
        for c in cases:
            print("%-45s needs %-28s %s" % (c.id, ", ".join(c.needs) or "-", c.doc))
        return 0
    if not cases:
        raise ValueError("no case matches %s" % " ".join(args.select or []))
    kept = []  # what setup said (deploy's file list), for the report if setup fails

    def log(line):
        kept.append(line)
        if args.verbose or line.startswith("hil:"):
            print(line, flush=True)

    target = make_target(args, log=log)
    where = ("a virtual board (%s)" % target.board.name if target.kind == "virtual"
             else "%s at %s" % (target.board.name, target.port))
    print("pgw hil: %d case%s on %s" % (len(cases), "" if len(cases) == 1 else "s", where), flush=True)
    t0 = time.monotonic()
    results = run_suite(target, cases, out=lambda line: print(line, flush=True), verbose=args.verbose)
    seconds = time.monotonic() - t0
    if results and results[0].classname == "hil.setup":
        results[0].output = "\n".join(kept)
    print(totals_line(results, seconds), flush=True)
    if args.junit:
        junit.write(args.junit, results, properties=target.properties())
        print("pgw hil: JUnit report %s" % args.junit, flush=True)
    bad = [r for r in results if r.outcome in ("failed", "error")]
    for r in bad:
        print("\n---- %s: %s ----\n%s" % (r.id, r.outcome.upper(), r.detail.rstrip()), file=sys.stderr)
    return 1 if bad else 0
