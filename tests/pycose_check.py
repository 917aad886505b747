"""Independent checks with pycose, shared by the host and end-to-end tests."""

import cbor2
from pycose.keys import CoseKey
from pycose.messages import Sign1Message


def pycose_payload(data, cose_key, external_aad=b"pgw-registry-1"):
    """A COSE_Sign1 (by default a registry request or answer) checked by
    pycose under `cose_key` -> its payload, decoded."""
    p, u, payload, sig = cbor2.loads(data).value
    msg = Sign1Message.from_cose_obj([p, dict(u), payload, sig], True)
    msg.external_aad = external_aad
    msg.key = CoseKey.decode(cose_key)
    assert msg.verify_signature(), "pycose refused a signature"
    return cbor2.loads(payload)
