# `identity rotate KID` and `identity wipe KID` (docs/identity.md): the
# kid of the key in place is the confirmation, so a stray or repeated
# line can neither replace nor delete a key. Without it the command only
# says what it would do. Imported for that one console line.
#
# rotate: a new key is written beside the old one, then renamed over it:
# a power cut leaves one whole key, old or new. The app goes on signing
# with the old key until the next reboot; the journal keeps payloads, not
# signatures, so what it still holds is signed with the new key then.
# wipe: the key, /config.json and the checked config go now; the
# household's unsent readings (the journal) go just before the reset, with
# no await between, so no task writes to the journal after it is gone.
import os

import asyncio
import machine

from gateway import boot, keys
from techconsole import ConsoleError

_NEXT = "/state/device.key.next"  # keys.KEY_FILE + ".next"
_JOURNAL = "/state/journal"  # as gateway.net.hub opens it
_CONFIG = ("/config.json", "/state/config.checked")


def _confirmed(what, confirm, effect):
    # -> the current key once `confirm` is its kid; otherwise raises
    # ConsoleError, which says what the command would do and how to confirm
    try:
        key = keys.load()
    except keys.KeyProviderError as e:
        raise ConsoleError(str(e))
    if key is None:
        raise ConsoleError("no signing key: nothing to %s (`identity provision` makes one)" % what)
    kid = key.kid.hex()
    if confirm != kid:
        if confirm is not None:
            raise ConsoleError("confirm with this device's kid %s, got %s" % (kid, confirm))
        raise ConsoleError("identity %s %s; to go ahead: identity %s %s" % (what, effect % kid, what, kid))
    return key


def rotate(confirm):
    # -> (old kid, the new SoftwareKey)
    old = _confirmed("rotate", confirm, "makes a new key in place of %s, for good").kid
    from gateway.keys.software import provision

    _remove(_NEXT)  # left by a rotation cut short: its key was never in use
    new = provision(_NEXT)
    os.rename(_NEXT, keys.KEY_FILE)
    new.path = keys.KEY_FILE
    return old, new


def wipe(confirm):
    # -> the kid that was deleted; the board resets 200 ms later
    kid = _confirmed("wipe", confirm, "deletes key %s, the config and the unsent readings, then reboots").kid
    _remove(keys.KEY_FILE)
    for path in _CONFIG:
        _remove(path)
    boot.config_saved.clear()
    asyncio.create_task(_clear_journal_and_reset())
    return kid


async def _clear_journal_and_reset():
    await asyncio.sleep_ms(200)  # the answer reaches the console first
    try:
        names = os.listdir(_JOURNAL)
    except OSError:
        names = ()
    for name in names:
        _remove(_JOURNAL + "/" + name)
    boot.leave_safe_mode()  # a reset asked for is no crash: the next owner starts with no count
    machine.reset()


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass  # not there
