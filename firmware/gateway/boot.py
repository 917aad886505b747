# What boot.py does: fail-safe outputs, the boot record, safe mode.
# main.py and the app read `board`, `config`, `safe_reason` from here.
import gc
import os
import sys

import machine

from compat import const, ticks_ms
from gateway import board as _board
from gateway import config as _config
from safemode import BootRecord, decide

STATE_DIR = "/state"
_RECORD = const("/state/boot.txt")  # in STATE_DIR

board = None
config = None
config_errors = []
config_kept = False  # the config was checked at this boot and its result kept
config_saved = {}  # path -> its "path value" line as `config set` saved it this boot
record = None
safe_reason = "boot did not finish"  # run() replaces it; a failed boot stays safe
boot_ticks = ticks_ms()
# set by boot.py (docs/ota.md): the ROM segment mounted at /rom (None: no
# A/B slots), and whether its version runs on trial
rom_slot = None
ota_trial = False

_CAUSE_NAMES = const(("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET"))


def reset_cause_name():
    cause = machine.reset_cause()
    for name in _CAUSE_NAMES:
        if getattr(machine, name, None) == cause:
            return name
    return "UNKNOWN(%d)" % cause


def forget_modules(names):
    # Forget these modules (and each one's attribute on its package), so
    # that their heap comes back once nothing else holds them.
    for name in names:
        if sys.modules.pop(name, None) is not None:
            package, dot, leaf = name.rpartition(".")
            if dot and package in sys.modules:
                try:
                    delattr(sys.modules[package], leaf)
                except AttributeError:
                    pass
    gc.collect()


def modules_since(before):
    # -> the names of the modules imported since `before` (a list of names)
    return [name for name in sys.modules if name not in before]


def load_record():
    try:
        with open(_RECORD, "rb") as f:
            return BootRecord.decode(f.read(64))
    except OSError:
        return BootRecord()


def write_atomic(path, data):
    # A new file, then a rename: a power cut leaves the old content or the new.
    tmp = path + ".new"
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.rename(tmp, path)


def save_record(rec):
    try:
        os.mkdir(STATE_DIR)
    except OSError:
        pass
    write_atomic(_RECORD, rec.encode())


def mark_app_start():
    record.unhealthy += 1
    save_record(record)


def mark_app_healthy():
    if record.unhealthy:
        record.unhealthy = 0
        save_record(record)


def mark_app_interrupted():
    # Ctrl-C from a technician (or mpremote) is not a crash.
    if record.unhealthy:
        record.unhealthy -= 1
        save_record(record)


def maintenance():
    # One boot without the app and without the watchdog, for a long REPL
    # session; the boot after it is normal again. `pgw console` calls this
    # on Ctrl-T.
    record.maintenance = 1
    save_record(record)
    machine.reset()


def leave_safe_mode():
    # For the technician at the REPL, after fixing what crashed:
    #   import gateway.boot; gateway.boot.leave_safe_mode(); machine.reset()
    record.unhealthy = 0
    save_record(record)


def run():
    global board, config, config_errors, config_kept, record, safe_reason
    board = _board.load()
    board.failsafe()
    config, config_errors = _config.load()
    config_kept = _config.kept
    record = load_record()
    record.boots += 1
    if not record.maintenance:
        save_record(record)  # saved below otherwise, with the flag cleared
    held = board.has("button") and board.input_active("button")
    safe_reason = decide(record, held, config["safe_mode_after"])
    if record.maintenance:
        record.maintenance = 0  # one boot only
        save_record(record)
    print("pgw: boot %d, board %s, reset %s%s" % (
        record.boots, board.name, reset_cause_name(),
        ", SAFE MODE: " + safe_reason if safe_reason else ""))
