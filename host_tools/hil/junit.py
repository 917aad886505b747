"""The JUnit XML report of a `pgw hil` run, for CI.

The common schema (Jenkins, GitLab, GitHub test reporters read it): one
<testsuite> of <testcase>s with `classname`, `name` and `time`; a failed
case holds <failure message type>, one that crashed <error>, a skipped one
<skipped message> with the reason; what the case and the board said goes to
<system-out>. The suite's counts are computed from the cases, never kept
apart from them. Only xml.etree: no dependency.
"""

import datetime
import socket
import xml.etree.ElementTree as ET

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"
OUTCOMES = (PASSED, FAILED, ERROR, SKIPPED)


class CaseResult:
    """One case's outcome. `message` is the one-line why (failure, error or
    skip reason), `detail` the traceback or the board's words, `output` what
    the case logged; `seconds` its wall time."""

    def __init__(self, classname, name, outcome, seconds=0.0, message="", detail="", output="", kind=""):
        if outcome not in OUTCOMES:
            raise ValueError("outcome must be one of %s, not %r" % (", ".join(OUTCOMES), outcome))
        if outcome == SKIPPED and not message.strip():
            raise ValueError("a skipped case needs its reason: %s.%s" % (classname, name))
        self.classname = classname
        self.name = name
        self.outcome = outcome
        self.seconds = seconds
        self.message = message
        self.detail = detail
        self.output = output
        self.kind = kind  # the exception's type name, for failures and errors

    @property
    def id(self):
        return "%s::%s" % (self.classname, self.name)

    def __repr__(self):
        return "<CaseResult %s %s>" % (self.id, self.outcome)


def counts(results):
    """{"tests", "failures", "errors", "skipped"} as the <testsuite> carries them."""
    return {
        "tests": len(results),
        "failures": sum(r.outcome == FAILED for r in results),
        "errors": sum(r.outcome == ERROR for r in results),
        "skipped": sum(r.outcome == SKIPPED for r in results),
    }


def _clean(text):
    # XML 1.0 allows neither NUL nor most control characters; a board's
    # output can hold them (raw-REPL Ctrl-D markers, line noise).
    return "".join(c if c in "\t\n\r" or ord(c) >= 0x20 else "\\x%02x" % ord(c) for c in text)


def to_element(results, suite="pgw-hil", properties=None, timestamp=None):
    """The <testsuites> element holding one <testsuite>."""
    n = counts(results)
    total = sum(r.seconds for r in results)
    root = ET.Element("testsuites", name=suite, tests=str(n["tests"]), failures=str(n["failures"]),
                      errors=str(n["errors"]), skipped=str(n["skipped"]), time="%.3f" % total)
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(n["tests"]), failures=str(n["failures"]),
                       errors=str(n["errors"]), skipped=str(n["skipped"]), time="%.3f" % total,
                       timestamp=(timestamp or datetime.datetime.now(datetime.timezone.utc))
                       .isoformat(timespec="seconds"),
                       hostname=socket.gethostname())
    if properties:
        props = ET.SubElement(ts, "properties")
        for key in sorted(properties):
            ET.SubElement(props, "property", name=key, value=_clean(str(properties[key])))
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname=r.classname, name=r.name, time="%.3f" % r.seconds)
        if r.outcome in (FAILED, ERROR):
            tag = "failure" if r.outcome == FAILED else "error"
            el = ET.SubElement(tc, tag, message=_clean(r.message), type=r.kind or tag)
            el.text = _clean(r.detail)
        elif r.outcome == SKIPPED:
            ET.SubElement(tc, "skipped", message=_clean(r.message))
        if r.output:
            ET.SubElement(tc, "system-out").text = _clean(r.output)
    return root


def to_bytes(results, **kw):
    root = to_element(results, **kw)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write(path, results, **kw):
    with open(path, "wb") as f:
        f.write(to_bytes(results, **kw))
