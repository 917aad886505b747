# CRC-16 checksums: X.25 (HDLC HCS/FCS, IEC 62056-46) and MODBUS (RTU).
# Table-driven, each 512-byte table built at its first use (a DLMS-only or a
# Modbus-only gateway holds one); the loops index the buffer rather than
# slicing it, so a check over part of a frame allocates nothing.
from array import array


def _table(poly):
    t = array("H", bytes(512))
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        t[i] = c
    return t


_X25 = None  # 0x1021 reflected
_MODBUS = None  # 0x8005 reflected

# crc16_x25 over data followed by its own FCS (little-endian) gives this:
X25_GOOD = 0x0F47


def crc16_x25(data, crc=0xFFFF, start=0, end=None):
    # CRC-16/X.25 of data[start:end] -> final value (xor-ed 0xFFFF); the FCS
    # goes on the wire little-endian. `crc` is the register's start value:
    # to continue a CRC pass crc16_x25(more, previous ^ 0xFFFF).
    global _X25
    if end is None:
        end = len(data)
    t = _X25
    if t is None:
        t = _X25 = _table(0x8408)
    for i in range(start, end):
        crc = (crc >> 8) ^ t[(crc ^ data[i]) & 0xFF]
    return crc ^ 0xFFFF


def crc16_modbus(data, start=0, end=None):
    # CRC-16/MODBUS of data[start:end]; on the wire little-endian.
    global _MODBUS
    if end is None:
        end = len(data)
    t = _MODBUS
    if t is None:
        t = _MODBUS = _table(0xA001)
    crc = 0xFFFF
    for i in range(start, end):
        crc = (crc >> 8) ^ t[(crc ^ data[i]) & 0xFF]
    return crc
