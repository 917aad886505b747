# Client.set and Client.action (dlms.client), loaded on first use: a
# gateway that only reads its meters never pays their heap.
from dlms import acse, apdu, axdr, client
from dlms.apdu import AccessError, ApduError, BlockTransferError, DlmsError


def set(self, obis, class_id, attr, value, access=None):
    # value: A-XDR encoded bytes, or (tag, value) for axdr.encode. A value
    # too long for the meter's PDU goes in blocks, if negotiated.
    self._check()
    data = _encoded(value)
    inv = self._invoke()
    req = apdu.set_request(class_id, obis, attr, data, access, inv)
    room = self._room()
    if len(req) <= room or not self.negotiated & acse.CONF_BLOCK_SET:
        r = yield from self._call(req, apdu.SET_RESPONSE, inv)
        if r.kind != apdu.NORMAL:
            raise ApduError("unexpected", "set-response choice %d" % r.kind)
    else:
        size = room - 32
        if size < 16:
            raise BlockTransferError("meter PDU too small for block transfer")
        mv = memoryview(data)
        n = len(data)
        last = size >= n
        req = apdu.set_request_first_block(class_id, obis, attr, mv[:size], last, access, inv)
        pos = size
        block = 1
        while True:
            r = yield from self._call(req, apdu.SET_RESPONSE, inv)
            if last:
                break
            if r.kind != apdu.DATABLOCK or r.block != block:
                if r.result:
                    raise AccessError(r.result, client._what(obis, attr))
                raise BlockTransferError("set block %d acknowledged as %r" % (block, r.block))
            block += 1
            last = pos + size >= n
            req = apdu.set_request_block(mv[pos:pos + size], last, block, inv)
            pos += size
        if r.kind != apdu.SET_LAST_DATABLOCK and r.kind != apdu.NORMAL:
            raise ApduError("unexpected", "set-response choice %d" % r.kind)
    if r.result:
        raise AccessError(r.result, client._what(obis, attr))

def action(self, obis, class_id, method, params=None):
    # -> the decoded return parameters, or None. params: A-XDR bytes or (tag, value)
    self._check()
    inv = self._invoke()
    req = apdu.action_request(class_id, obis, method,
                              None if params is None else _encoded(params), inv)
    r = yield from self._call(req, apdu.ACTION_RESPONSE, inv)
    if r.kind != apdu.NORMAL:
        raise ApduError("unexpected", "action-response choice %d" % r.kind)
    if r.result:
        raise AccessError(r.result, client._what(obis, method), True)
    if r.data_result:
        raise AccessError(r.data_result, client._what(obis, method))
    return r.value


def _encoded(value):
    if isinstance(value, tuple):
        try:
            return axdr.encode(value[0], value[1])
        except axdr.AxdrError as e:
            raise DlmsError("cannot encode %r: %s" % (value, e))
    return value
