"""Prosumer Gateway host tools (CPython)."""
