"""The neighbourhood hub (`pgw hub`): ingests the gateways' signed
messages, acknowledges them, and (issue 6) runs the market and the ledger.

It is written against the protocol spec (docs/protocol.md) with independent
libraries, cbor2 and cryptography, not with lib/: so every test where a
gateway talks to the hub is also a cross-check of lib/'s encoders.
"""
