# Runs under MicroPython (`micropython bench/mp_push_decrypt.py LIBDIR N`):
# time to decrypt and decode one general-glo-ciphered Data-Notification
# (SC 0x30: authenticated and encrypted, 12-byte tag) of about 200 bytes,
# the size an Austrian or Luxembourg customer interface pushes.
import sys

sys.path.insert(0, sys.argv[1])
import time

from dlms import axdr, push, security

EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
METER_TITLE = b"PGW\x00\x00\xbc\x61\x4e"

n = int(sys.argv[2])
# A body like a customer interface's: date-time, then OBIS/value pairs.
items = [(axdr.OCTET_STRING, bytes(12))]
for c in range(1, 13):
    items.append((axdr.OCTET_STRING, bytes((1, 0, c, 7, 0, 255))))
    items.append((axdr.DOUBLE_LONG_UNSIGNED, 1000 * c))
body = axdr.encode(axdr.STRUCTURE, items)
plain = push.encode_notification(body, long_invoke_id=1)
meter = security.SecurityContext(METER_TITLE, EK, AK, invocation_counter=1)
frames = [meter.protect(0x30, plain, general=True) for _ in range(n)]
gateway = security.SecurityContext(b"GATEWAY1", EK, AK)
t0 = time.ticks_us()
for f in frames:
    note = push.decode_apdu(f, gateway)
elapsed = time.ticks_diff(time.ticks_us(), t0)
assert note.authenticated and len(note.body) == 25
print("apdu_bytes", len(frames[0]))
print("ms_per_push", elapsed / n / 1000)
