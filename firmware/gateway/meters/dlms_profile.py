# Load profiles of DLMS meters (profile generic, 1-0:99.1.0.255 by default):
# rows by range, streamed as they arrive, for the console and for callers
# that journal them. Imported only when a profile is asked for.
import asyncio

from compat import const
from dlms.apdu import DlmsError
from dlms.axdr import DateTime
from gateway.meters import MeterError
from gateway.meters.dlms_meter import error

PROFILE_LN = b"\x01\x00\x63\x01\x00\xff"  # 1-0:99.1.0.255, load profile 1
_DAY = const(86400)


async def read_profile(driver, t_from, t_to, on_row, chunk_s=0, obis=PROFILE_LN):
    # Rows of a profile-generic buffer between two UTC times (range access on
    # the clock column) of a dlms_meter.Driver, each handed to on_row(row) as
    # its bytes arrive: only one block and the unfinished row are held
    # (Client.get_stream). chunk_s > 0 asks one range per chunk_s seconds,
    # letting the polls in between. Needs the association open. -> row count.
    n = 0
    a = t_from
    while a <= t_to:
        b = t_to if chunk_s <= 0 else min(t_to, a + chunk_s - 1)
        async with driver.lock:
            if not driver.opened:
                raise MeterError("state", "not associated (the meter is failing)")
            ok = False
            try:
                n += await driver._run(driver.client.read_profile(
                    obis, DateTime.from_unix(a, 0), DateTime.from_unix(b, 0), on_row))
                ok = True
            except DlmsError as e:
                raise error(e)
            finally:
                if not ok:
                    driver.opened = False  # the service reopens it
        a = b + 1
    driver.profile_note = "%d rows from %d to %d (utc)" % (n, t_from, t_to)
    return n


def row_text(row):
    # a profile row -> "2025-06-21 10:00 dev -120  12345  678"
    out = []
    for v in row:
        if isinstance(v, bytes) and len(v) == 12:
            dt = DateTime.from_octets(v)
            out.append("%04d-%02d-%02d %02d:%02d dev %s" % (dt.year, dt.month, dt.day, dt.hour,
                                                            dt.minute, dt.deviation))
        else:
            out.append(str(v))
    return "  ".join(out)


def start(driver, hours, say):
    # Stream the last `hours` of the load profile as lines through say(), a
    # day per request so polls go on in between. -> the answer line.
    task = driver.profile_task
    if task is not None and not task.done():
        raise MeterError("busy", "a profile read is running")
    t_to = driver.now()
    t_from = t_to - hours * 3600
    name = driver.name

    async def job():
        try:
            n = await read_profile(driver, t_from, t_to, lambda row: say(row_text(row)), _DAY)
            say("profile %s: %d rows" % (name, n))
        except (MeterError, OSError) as e:
            say("profile %s failed: %s" % (name, e))

    driver.profile_task = asyncio.create_task(job())
    return "profile %s: the last %d h, rows follow (time, then the captured values)" % (name, hours)
