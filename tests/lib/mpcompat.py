# What a lib test needs beyond `assert`, on both interpreters.
# pytest is not importable on MicroPython, so tests use these instead of
# pytest.skip and pytest.raises (see docs/testing.md).

import sys

if sys.implementation.name == "micropython":
    _SkipBase = Exception
else:
    # pytest reports unittest.SkipTest as a skip; tests/mprunner.py goes by the
    # class name, so the name SkipTest is part of the convention.
    from unittest import SkipTest as _SkipBase


class SkipTest(_SkipBase):
    # raise SkipTest("reason") to skip the running test
    pass


def raises(exc_type, func, *args, **kwargs):
    # Assert that func(*args, **kwargs) raises exc_type (a class or a tuple of
    # classes) and return the exception; any other exception propagates.
    try:
        func(*args, **kwargs)
    except exc_type as exc:
        return exc
    raise AssertionError("%s did not raise %s" % (
        getattr(func, "__name__", repr(func)),
        getattr(exc_type, "__name__", repr(exc_type))))
