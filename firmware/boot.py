# boot.py runs first at every boot and soft reboot. It stays source on the
# filesystem and an update never replaces it, so it chooses the code slot
# (the ROM segment at /rom) before anything is imported from there, by the
# rules of lib/otaslots.py in its filesystem copy (docs/ota.md). Then
# gateway/boot.py, from the slot: actuators to their fail-safe state and
# the safe-mode decision. main.py runs in these globals: on a trial it
# writes _ota_next with _ota_save() before the app starts. What else is
# defined here is deleted at the end: compiled from source, it is heap.
import sys

_OTA = "/state/ota.txt"
_ota_slot = None  # the segment mounted at /rom; None: no A/B slots
_ota_next = None  # a trial's record once its app has started (main.py writes it)
_ota_back = None  # the record that rolls the trial back


def _ota_save(data):
    # a new file, then a rename: a power cut leaves the old record or the new
    import os

    try:
        os.mkdir("/state")
    except OSError:
        pass
    with open(_OTA + ".new", "wb") as f:
        f.write(data)
    os.rename(_OTA + ".new", _OTA)


def _ota_choose():
    global _ota_slot, _ota_next, _ota_back
    import vfs

    try:
        from vboard_rom import rom_ioctl  # the virtual board's ROM
    except ImportError:
        rom_ioctl = getattr(vfs, "rom_ioctl", None)
    if rom_ioctl is None or rom_ioctl(1) < 2:
        return  # one segment or none: nothing to choose
    try:
        with open(_OTA, "rb") as f:
            text = f.read(200)
    except OSError:  # no update since `pgw deploy`: segment 0, as the port mounted it
        _ota_slot = 0 if "/rom" in sys.path else None
        return
    path = sys.path[:]
    sys.path[:] = ["/lib"]  # the filesystem's copy, never a slot's
    try:
        from otaslots import SlotRecord
    finally:
        sys.path[:] = path
        sys.modules.pop("otaslots", None)  # the app imports its slot's own
    rec = SlotRecord.decode(text)
    slot, first = rec.at_boot()
    while slot is not None:
        if first is not None:
            _ota_save(first.encode())
            rec = first
            print("pgw: trial not committed: back to slot %d, seq %d" % (rec.slot, rec.seq))
        try:
            vfs.umount("/rom")
        except OSError:
            pass
        try:
            vfs.mount(vfs.VfsRom(rom_ioctl(2, slot)), "/rom")
            break
        except Exception:  # erased, no ROMFS image, no such segment
            print("pgw: slot %d holds no code" % slot)
            slot, first = rec.unmountable(slot)
    _ota_slot = slot
    if slot is not None and "/rom" not in sys.path:
        sys.path[:0] = ["/rom", "/rom/lib"]  # as a port's _boot.py puts them
    if rec.trial and slot == rec.slot:
        _ota_next = rec.started().encode()
        _ota_back = rec.rollback().encode()
        print("pgw: slot %d, seq %d on trial" % (slot, rec.seq))


try:
    _ota_choose()
except Exception as e:  # whatever /rom holds now is booted
    sys.print_exception(e)
try:
    import gateway.boot

    gateway.boot.rom_slot = _ota_slot
    gateway.boot.ota_trial = _ota_next is not None
    gateway.boot.run()
except Exception as e:  # a broken install must still leave a usable REPL
    sys.print_exception(e)
    print("pgw: boot failed; app will not start")
    if _ota_back is not None:  # a trial version that cannot boot: the previous one, now
        _ota_save(_ota_back)
        print("pgw: rolling back")
        import machine

        machine.reset()
del _ota_choose, _ota_back, _ota_slot
