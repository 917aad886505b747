"""`pgw provision`: a deployed board becomes one of a community's gateways
(docs/field.md, "Provisioning").

    pgw provision keygen --out installer.pem
    pgw provision --port P --hub mqtt://HOST:PORT --community C --installer-key installer.pem
                  [--hub-key hub.cose] [--config FILE] [--wifi-ssid S] [--wifi-password W]
                  [--meter SPEC ...] [--meters FILE] [--set PATH=VALUE ...] [--ota-key FILE]
                  [--name NAME] [--label-out FILE] [--rotate | --replaces KID] [--keep-config] [--dry-run]
    pgw provision decommission --port P --hub URL --community C --installer-key installer.pem [--kid KID]

Each step is checked before the next one starts:

1. the hub's key, retained on pgw/1/<community>/hub/key, compared with
   --hub-key when given;
2. the whole config, built from the options, checked with lib/deviceconfig.py
   (the code the board runs): nothing is touched before it passes (with
   --keep-config the board's config stays, and only its hub.key is checked);
3. on the board's console, `identity`: the key is made on the device
   (`identity provision`) when it has none, or replaced (`identity rotate
   KID`) with --rotate;
4. at the hub, a registration signed by the installer key
   (host_tools/hub/registry.py), and the hub's signed answer;
5. /config.json written over the raw REPL, as `pgw deploy` writes files
   (`config set` takes one word of 80 characters, after a login: hub.key,
   ota.key, meters and SSIDs with spaces do not fit), the count of
   unhealthy starts cleared (the tool's resets come quickly and are not a
   crash loop), then a reset;
6. the board's answers after the reset: its kid, `status` without config
   errors, `config get` of what was written, compared with what
   lib/deviceconfig.py shows for the same config;
7. the label: kid, fingerprint, community and a QR code.

The fingerprint is the first 8 bytes of SHA-256 over the device's COSE_Key
in its deterministic encoding (docs/protocol.md section 1), in groups of 4
hex digits; the QR code holds PGW:1:<COMMUNITY>:<KID>:<FINGERPRINT>, upper
case, so it fits QR's compact alphanumeric mode."""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import re
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools.hub import registry as reg
from host_tools.hub.cose_es256 import Rejected, decode_cose_key, encode_cose_key, kid_of, loads_exact

REPO = Path(__file__).resolve().parents[1]
MAX_CONFIG = 16384  # the board does not read a bigger /config.json
CHECKED_PATHS = ("community", "mqtt.host", "mqtt.port", "hub.key", "ota.key")  # read back after the reset
KID_RX = re.compile(r"^kid +([0-9a-f]{16})\s*$", re.M)
OLD_KID_RX = re.compile(r"^old kid +([0-9a-f]{16})\b", re.M)
COSE_KEY_RX = re.compile(r"^cose_key +([0-9a-f]+)\s*$", re.M)


class ProvisionError(RuntimeError):
    """reason: usage, installer_key, config, broker, hub_key_missing,
    hub_key_mismatch, no_console, board, no_key, refused, no_answer,
    check_failed."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def _deviceconfig():
    lib = str(REPO / "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)
    import deviceconfig

    return deviceconfig


# ---- keys ----


def keygen(out):
    """A new installer key: PEM (PKCS8, mode 600) at `out` and its public
    COSE_Key beside it (.cose) -> (kid, COSE_Key)."""
    out = Path(out)
    if out.exists():
        raise ProvisionError("usage", f"{out} exists: an installer key is never overwritten")
    key = ec.generate_private_key(ec.SECP256R1())
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cose_key = encode_cose_key(key.public_key())
    out.with_suffix(".cose").write_bytes(cose_key)
    return kid_of(key.public_key()), cose_key


def load_installer(path):
    """The installer's private key (PEM, from keygen)."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    except (OSError, ValueError, TypeError) as e:
        raise ProvisionError("installer_key", f"{path}: not an installer key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ProvisionError("installer_key", f"{path}: not a P-256 key")
    return key


def load_cose_key(path, what):
    """A public key from FILE as a COSE_Key (binary or hex text, or PEM) -> canonical bytes."""
    try:
        return reg.load_public_key(path)[2]
    except (OSError, ValueError) as e:
        raise ProvisionError("usage", f"{what}: {e}") from None


def fingerprint(cose_key):
    """First 8 bytes of SHA-256 over the COSE_Key, deterministic encoding."""
    _, pub = decode_cose_key(cose_key)
    return hashlib.sha256(encode_cose_key(pub)).digest()[:8]


def registration(installer, community, action, device=None, kid=None, name=None, replaces=None,
                 ts=None, nonce=None):
    """A request for the hub's registry (host_tools/hub/registry.py), signed by `installer`."""
    p = {reg.ACTION: action, reg.COMMUNITY: community, reg.TS: int(time.time() if ts is None else ts),
         reg.NONCE: os.urandom(16) if nonce is None else nonce}
    for label, value in ((reg.DEVICE, device), (reg.KID, kid), (reg.NAME, name), (reg.REPLACES, replaces)):
        if value is not None:
            p[label] = value
    return reg.sign(installer, cbor2.dumps(p, canonical=True))


# ---- the config ----


def parse_meter(spec):
    """--meter: a JSON object, or name=grid,protocol=modbus-tcp,host=10.0.0.5,unit=1,...
    (a value that reads as JSON, e.g. 502 or true, is taken as such)."""
    spec = spec.strip()
    if spec.startswith("{"):
        try:
            m = json.loads(spec)
        except ValueError as e:
            raise ProvisionError("usage", f"--meter {spec!r}: {e}") from None
        return m
    m = {}
    for item in spec.split(","):
        name, eq, text = item.partition("=")
        if not eq or not name.strip():
            raise ProvisionError("usage", f"--meter {spec!r}: NAME=VALUE pairs separated by commas, or a JSON object")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        m[name.strip()] = value
    return m


def build_config(args, hub_key, ota_key):
    """The options -> (doc for /config.json, checked values); ProvisionError("config") on any error."""
    dc = _deviceconfig()
    doc = {}
    if args.config:
        try:
            doc = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as e:
            raise ProvisionError("config", f"{args.config}: {e}") from None
        if not isinstance(doc, dict):
            raise ProvisionError("config", f"{args.config}: a JSON object")
    doc = json.loads(json.dumps(doc))  # a copy to change
    if doc.get("community", args.community) != args.community:
        raise ProvisionError("config", f"{args.config} is for community {doc['community']!r}, "
                             f"not --community {args.community!r}")
    doc["community"] = args.community
    mqtt = doc.setdefault("mqtt", {})
    if not isinstance(mqtt, dict):
        raise ProvisionError("config", "mqtt must be an object")
    if "host" not in mqtt:  # a config file may name the broker as the board reaches it
        url = hub_url(args.hub)
        mqtt["host"], mqtt["port"] = url[0], url[1]
    wifi = doc.setdefault("wifi", {}) if (args.wifi_ssid is not None or args.wifi_password is not None) else None
    if wifi is not None:
        if args.wifi_ssid is not None:
            wifi["ssid"] = args.wifi_ssid
        if args.wifi_password is not None:
            wifi["password"] = args.wifi_password
    if args.meters:
        try:
            doc["meters"] = json.loads(Path(args.meters).read_text())
        except (OSError, ValueError) as e:
            raise ProvisionError("config", f"{args.meters}: {e}") from None
    if args.meter:
        doc["meters"] = list(doc.get("meters") or []) + [parse_meter(s) for s in args.meter]
    for item in args.set:
        path, eq, text = item.partition("=")
        if not eq:
            raise ProvisionError("usage", f"--set {item!r}: PATH=VALUE, as `config set PATH VALUE` takes it")
        try:
            doc, _ = dc.set(doc, path.strip(), text)
        except dc.ConfigError as e:
            raise ProvisionError("config", f"--set {item}: {e}") from None
    doc.setdefault("hub", {})["key"] = hub_key.hex() if hub_key else ""
    if ota_key is not None:
        doc.setdefault("ota", {})["key"] = ota_key.hex()
    values, errors = dc.validate(doc)
    for m in values.get("meters") or ():
        profile = m.get("profile")
        if profile and not (REPO / "lib" / "meterprofiles" / (profile + ".json")).exists():
            errors.append(f"meter {m['name']}: no profile {profile!r} in lib/meterprofiles")
    if errors:
        raise ProvisionError("config", "the config has errors; nothing was touched:\n  " + "\n  ".join(errors))
    if len(config_bytes(doc)) > MAX_CONFIG:
        raise ProvisionError("config", f"the config is {len(config_bytes(doc))} bytes; the board reads {MAX_CONFIG}")
    return doc, values


def config_bytes(doc):
    """/config.json as the board's `config set` writes it (firmware/gateway/settings.py):
    keys sorted, one top-level field a line, so a later `config set` changes one line."""
    def dump(v):
        if isinstance(v, dict):
            return "{" + ", ".join(json.dumps(k) + ": " + dump(v[k]) for k in sorted(v)) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(dump(x) for x in v) + "]"
        return json.dumps(v)
    return ("{" + ",".join("\n  " + json.dumps(k) + ": " + dump(doc[k]) for k in sorted(doc)) + "\n}\n").encode()


def shown_config(doc):
    """The config for the terminal: the WiFi password as ***."""
    doc = json.loads(json.dumps(doc))
    if (doc.get("wifi") or {}).get("password"):
        doc["wifi"]["password"] = "***"
    return config_bytes(doc).decode()


def hub_url(url):
    u = urlparse(url or "")
    if u.scheme != "mqtt" or not u.hostname:
        raise ProvisionError("usage", f"--hub {url!r}: mqtt://HOST:PORT, the broker the hub uses")
    return u.hostname, u.port or 1883


# ---- the label ----


class _Terminal(io.StringIO):
    def isatty(self):  # qrcode writes its colour codes only for a terminal
        return True


def label(kid, cose_key, community, name=None, tty=False):
    """The label's text: device id, fingerprint, community, a QR code. tty:
    for a terminal, the code in ANSI colours, dark on light whatever the
    terminal's own colours (a file or a printer gets plain text)."""
    import qrcode

    fp = fingerprint(cose_key).hex()
    code = "PGW:1:%s:%s:%s" % (community.upper(), kid.hex().upper(), fp.upper())
    qr = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(code)
    qr.make(fit=True)
    art = _Terminal() if tty else io.StringIO()
    qr.print_ascii(out=art, tty=tty)
    lines = ["pgw gateway",
             "device id    %s" % kid.hex(),
             "fingerprint  %s" % " ".join(fp[i:i + 4] for i in range(0, 16, 4)),
             "community    %s" % community]
    if name:
        lines.append("name         %s" % name)
    return "\n".join(lines + art.getvalue().rstrip("\n").split("\n") + [code]) + "\n"


# ---- the hub, over MQTT ----


class HubLink:
    """A short MQTT session with the community's broker: the hub's key, then
    a request and the hub's signed answer."""

    def __init__(self, url, community, timeout=20.0):
        import paho.mqtt.client as mqtt

        self.host, self.port = hub_url(url)
        self.community, self.timeout = community, timeout
        self.inbox = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pgw-provision-" + os.urandom(4).hex())
        self.client.on_connect = lambda c, u, f, rc, p: rc.is_failure or self._connected.set()
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.put(mid)
        self.client.on_message = lambda c, u, msg: self.inbox.put((msg.topic, msg.payload))
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            raise ProvisionError("broker", f"cannot reach the broker at {self.host}:{self.port}: {e}") from None
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise ProvisionError("broker", f"the broker at {self.host}:{self.port} did not accept us "
                                 f"in {timeout:.0f} s")

    def _subscribe(self, topic):
        mid = self.client.subscribe(topic, qos=1)[1]
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if self._subscribed.get(timeout=max(0.01, deadline - time.monotonic())) == mid:
                    return
            except queue.Empty:
                raise ProvisionError("broker", f"no SUBACK for {topic}") from None

    def _next(self, topic, deadline):
        """The next message on `topic` before `deadline` (monotonic), or None."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                t, payload = self.inbox.get(timeout=left)
            except queue.Empty:
                return None
            if t == topic:
                return payload

    def hub_key(self, pinned=None):
        """The hub's COSE_Key from its retained topic, checked against the pinned one."""
        topic = f"pgw/1/{self.community}/hub/key"
        self._subscribe(topic)
        data = self._next(topic, time.monotonic() + min(self.timeout, 10.0))
        if not data:
            raise ProvisionError("hub_key_missing", f"no hub key retained on {topic} at {self.host}:{self.port}: "
                                 f"is `pgw hub --community {self.community}` running on this broker?")
        try:
            kid, pub = decode_cose_key(data)
        except Rejected as e:
            raise ProvisionError("hub_key_missing", f"{topic} holds no usable key ({e})") from None
        if pinned is not None and decode_cose_key(pinned)[0] != kid:
            raise ProvisionError("hub_key_mismatch", f"{topic} holds kid {kid.hex()}, not the pinned "
                                 f"{decode_cose_key(pinned)[0].hex()}: another key answers for the hub; "
                                 "nothing was touched")
        return encode_cose_key(pub)

    def request(self, data, installer_kid, hub_key):
        """Send a registry request -> the hub's answer {outcome, detail, kid}, its signature checked."""
        topic = reg.result_topic(self.community, installer_kid)
        self._subscribe(topic)
        _, hub_pub = decode_cose_key(hub_key)
        digest = hashlib.sha256(cbor2.loads(data).value[2]).digest()
        self.client.publish(reg.register_topic(self.community), data, qos=1).wait_for_publish(self.timeout)
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._next(topic, deadline)
            if answer is None:
                raise ProvisionError("no_answer", f"no answer from the hub within {self.timeout:.0f} s on {topic}: "
                                     "is the hub started with this installer's key (--installer-key)?")
            try:
                body = loads_exact(reg.verify(answer, hub_pub))
            except Exception:  # cbor2 and the checks raise many kinds
                continue  # not signed by the hub: not its answer
            if isinstance(body, dict) and body.get(reg.REQUEST) == digest:
                return {"outcome": body.get(reg.OUTCOME), "detail": body.get(reg.DETAIL),
                        "kid": body.get(reg.RESULT_KID)}

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


# ---- the board ----


class Board:
    """The gateway's console (host_tools/console.py's BoardLink), line by line."""

    def __init__(self, port, baud=115200, wait_s=30.0):
        from host_tools.console import BoardLink

        self.port = port
        deadline = time.monotonic() + wait_s
        while True:  # a USB board's port comes back a moment after a reset
            try:
                self.link = BoardLink(port, baud)
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise ProvisionError("no_console", str(e)) from None
                time.sleep(0.5)
        self.link.line_sink = lambda line: None

    def ready(self, timeout=40.0):
        """Wait for the app's prompt: an empty line answers with one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.link.prompts()
            self.link.write(b"\r")
            if self.link.wait_prompt(seen, 1.0):
                return
        raise ProvisionError("no_console", f"no gateway console on {self.port} within {timeout:.0f} s "
                             "(safe mode? not deployed? see `pgw console --port ...`)")

    def ask(self, line, timeout=30.0):
        """A console line -> its answer's text."""
        got = []
        self.link.line_sink = got.append
        try:
            seen = self.link.prompts()
            self.link.write(line.encode() + b"\r")
            if not self.link.wait_prompt(seen, timeout):
                raise ProvisionError("board", f"no answer to {line!r} within {timeout:.0f} s")
        finally:
            self.link.line_sink = lambda line: None
        return "\n".join(got)

    def identity(self, line="identity"):
        """-> (kid, COSE_Key, answer) or None when the board has no key."""
        answer = self.ask(line)
        if "no signing key yet" in answer:
            return None
        err = re.search(r"^ERR (.*)$", answer, re.M)
        kid, cose_key = KID_RX.search(answer), COSE_KEY_RX.search(answer)
        if err or not kid or not cose_key:
            raise ProvisionError("board", f"`{line}`: " + (err.group(1) if err else answer.strip() or "no answer"))
        cose_key = bytes.fromhex(cose_key.group(1))
        kid = bytes.fromhex(kid.group(1))
        if decode_cose_key(cose_key)[0] != kid:
            raise ProvisionError("board", f"`{line}`: the kid shown is not the key's")
        return kid, cose_key, answer

    def wait_reboot(self, timeout=30.0):
        """Until the board's boot line, or its USB port going away in the reset."""
        seen = threading.Event()
        self.link.line_sink = lambda line: (line.startswith("pgw: boot") or "port went away" in line) and seen.set()
        try:
            if not seen.wait(timeout):
                raise ProvisionError("board", f"the board on {self.port} did not reboot within {timeout:.0f} s")
        finally:
            self.link.line_sink = lambda line: None

    def close(self):
        self.link.close()


def reset_board(port, config=None):
    """Over the raw REPL, as `pgw deploy` does: /config.json written when given
    (a new file, then a rename), the count of unhealthy starts cleared (these
    resets are ours, not a crash loop: three in a row would end in safe
    mode), then a reset."""
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    try:
        t = SerialTransport(port, baudrate=115200)
    except TransportError as e:
        raise ProvisionError("board", f"cannot open {port}: {e}") from None
    try:
        t.enter_raw_repl(soft_reset=True)
        if config is not None:
            t.fs_writefile("/config.json.new", config, chunk_size=1024)
            t.exec("import os\nos.rename('/config.json.new', '/config.json')")
        t.exec("from gateway import boot as b\nb.record = b.load_record()\nb.leave_safe_mode()")
        t.exec_raw_no_follow("import machine\nmachine.reset()")
    except TransportError as e:
        raise ProvisionError("board", f"writing /config.json on {port}: {e}") from None
    finally:
        t.close()


# ---- the command ----


def _say(line):
    print(line, flush=True)


def _steps_for(args, installer_kid):
    hub = "%s:%d" % hub_url(args.hub)
    pin = f", which must be the pinned {args.hub_key}" if args.hub_key else " (not pinned: --hub-key)"
    if args.rotate:
        key = "`identity`, then `identity rotate KID`: a new key made on the board in place of the old one"
    else:
        key = "`identity`; `identity provision` makes the key on the board if it has none"
    who = installer_kid.hex() if installer_kid else "--installer-key"
    return [f"read the hub's key from pgw/1/{args.community}/hub/key on {hub}{pin}",
            "keep the board's config (--keep-config)" if args.keep_config else
            "check the config below with lib/deviceconfig.py, the board's own code",
            f"on the board's console: {key}",
            f"register the device key with the hub: a request signed by installer {who} on "
            f"{reg.register_topic(args.community)}" + (", revoking the old key" if args.rotate or args.replaces else "")
            + "; wait for the hub's signed answer",
            ("over the raw REPL: " + ("" if args.keep_config else "write /config.json, ")
             + "clear the count of unhealthy starts, reset the board"),
            "check the board's answers: identity, status, config get "
            + ("hub.key" if args.keep_config else " ".join(CHECKED_PATHS)),
            "print the label" + (f" (and write it to {args.label_out})" if args.label_out else "")]


def provision(args, say=_say):
    """`pgw provision` -> the label's text."""
    if args.rotate and args.replaces:
        raise ProvisionError("usage", "--rotate finds the key it replaces; --replaces is for a rotation cut short")
    if args.keep_config and (args.config or args.meter or args.meters or args.set or args.ota_key
                             or args.wifi_ssid is not None or args.wifi_password is not None):
        raise ProvisionError("usage", "--keep-config leaves /config.json alone: no config options with it")
    replaces = _kid_arg(args.replaces, "--replaces") if args.replaces else None
    installer = load_installer(args.installer_key) if args.installer_key else None
    if installer is None and not args.dry_run:
        raise ProvisionError("usage", "--installer-key FILE is needed (pgw provision keygen makes one)")
    installer_kid = kid_of(installer.public_key()) if installer else None
    pinned = load_cose_key(args.hub_key, "--hub-key") if args.hub_key else None
    ota_key = load_cose_key(args.ota_key, "--ota-key") if args.ota_key else None
    steps = _steps_for(args, installer_kid)
    if args.dry_run:
        say(f"pgw provision: {args.port} for community {args.community}: dry run, nothing is touched")
        for i, step in enumerate(steps, 1):
            say("%2d. %s" % (i, step))
        if args.keep_config:
            return None
        doc, _ = build_config(args, pinned, ota_key)
        if pinned is None:
            say("config (hub.key is filled in from step 1):")
        else:
            say("config:")
        say(shown_config(doc).rstrip("\n"))
        return None
    say(f"pgw provision: {args.port} for community {args.community}, hub on {args.hub}")
    hub = HubLink(args.hub, args.community, args.timeout)
    try:
        hub_key = hub.hub_key(pinned)
        say(" 1. hub key: kid %s%s" % (decode_cose_key(hub_key)[0].hex(), ", as pinned" if pinned else ""))
        if args.keep_config:
            data, expect = None, {"hub.key": 'hub.key "%s"' % hub_key.hex()}
            say(" 2. config: the board's own, kept (--keep-config)")
        else:
            doc, values = build_config(args, hub_key, ota_key)
            data = config_bytes(doc)
            expect = {path: _deviceconfig().get(values, path) for path in CHECKED_PATHS}
            n = len(values.get("meters") or ())
            say(" 2. config: checked, %d bytes, %d meter%s%s%s" % (
                len(data), n, "" if n == 1 else "s", ", limits" if "limits" in values else "",
                ", OTA key" if values["ota"]["key"] else ", no OTA key (--ota-key)"))
        board = Board(args.port, args.baud)
        try:
            board.ready()
            kid, cose_key, rotated = _device_key(board, args.rotate, say)
        finally:
            board.close()
        _register(hub, installer, args.community, cose_key, kid, args.name, rotated or replaces, hub_key, say,
                  rotated=rotated is not None)
    finally:
        hub.close()
    reset_board(args.port, data)
    say(" 5. config: %s, board reset" % ("kept" if data is None else "/config.json written"))
    _check_board(args, kid, expect, say)
    text = label(kid, cose_key, args.community, args.name)
    if args.label_out:
        Path(args.label_out).write_text(text)
    say(" 7. label" + (f" (also in {args.label_out}):" if args.label_out else ":"))
    say((label(kid, cose_key, args.community, args.name, tty=True) if sys.stdout.isatty() else text).rstrip("\n"))
    return text


def _kid_arg(text, what):
    text = (text or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{16}", text):
        raise ProvisionError("usage", f"{what} {text!r}: a kid, 16 hex digits")
    return bytes.fromhex(text)


def _device_key(board, rotate, say):
    """-> (kid, COSE_Key, the kid it replaced or None)"""
    ident = board.identity()
    old = None
    if rotate:
        if ident is None:
            raise ProvisionError("no_key", "--rotate: the board has no key to replace; provision it without --rotate")
        old = ident[0]
        kid, cose_key, answer = board.identity("identity rotate " + old.hex())
        m = OLD_KID_RX.search(answer)
        if not m or m.group(1) != old.hex():
            raise ProvisionError("board", "`identity rotate` did not confirm the old kid: " + answer.strip())
        say(f" 3. device key: rotated on the board, kid {kid.hex()} in place of {old.hex()}")
    elif ident is None:
        kid, cose_key, _ = board.identity("identity provision")
        say(f" 3. device key: made on the board, kid {kid.hex()}")
    else:
        kid, cose_key, _ = ident
        say(f" 3. device key: the board's own, kid {kid.hex()} (kept; --rotate replaces it)")
    return kid, cose_key, old


def _register(hub, installer, community, cose_key, kid, name, replaces, hub_key, say, rotated=False):
    data = registration(installer, community, reg.REGISTER, device=cose_key, name=name, replaces=replaces)
    answer = hub.request(data, kid_of(installer.public_key()), hub_key)
    if answer["outcome"] != "ok":
        hint = ""
        if rotated:  # the board's new key is not registered, and its old one is gone
            hint = (f"; the board now holds kid {kid.hex()}: run again with --replaces {replaces.hex()} "
                    "(not --rotate) once the problem is fixed")
        raise ProvisionError("refused", f"the hub refused the registration: {answer['detail']}{hint}")
    say(f" 4. hub: {answer['detail']}")


def _check_board(args, kid, expect, say):
    """The board after its reset: kid, no config errors, expect {path: its `config get` line}."""
    board = Board(args.port, args.baud)
    try:
        board.ready(timeout=60)
        ident = board.identity()
        if ident is None or ident[0] != kid:
            raise ProvisionError("check_failed", f"after the reset the board shows kid "
                                 f"{ident[0].hex() if ident else 'none'}, not {kid.hex()}")
        status = board.ask("status")
        bad = re.search(r"^config +(.*)$", status, re.M)
        if bad:
            raise ProvisionError("check_failed", "the board refused fields of its config: " + bad.group(1))
        for path, want in expect.items():
            got = _field_line(board.ask("config get " + path), path)
            if got != want:
                raise ProvisionError("check_failed", f"`config get {path}` shows {got!r}, not {want!r}")
    finally:
        board.close()
    say(f" 6. board: back with kid {kid.hex()}, config in effect ({', '.join(expect)} as expected), "
        "no config errors")


def _field_line(answer, path):
    # `config get PATH`'s line; a heartbeat or log line may come in the same answer
    return next((line.strip() for line in answer.splitlines() if line.startswith(path + " ")), answer.strip())


def decommission(args, say=_say):
    """`pgw provision decommission`: revoke the key at the hub, then wipe the board."""
    if not args.installer_key:
        raise ProvisionError("usage", "--installer-key FILE is needed")
    if not args.port and not args.kid:
        raise ProvisionError("usage", "--port (a board at hand), or --kid KID (revoke a lost board's key)")
    installer = load_installer(args.installer_key)
    pinned = load_cose_key(args.hub_key, "--hub-key") if args.hub_key else None
    kid = _kid_arg(args.kid, "--kid") if args.kid else None
    what = f"{args.port or 'kid ' + kid.hex()} in community {args.community}"
    if args.dry_run:
        say(f"pgw provision decommission: {what}: dry run, nothing is touched")
        for i, step in enumerate(_decommission_steps(args, installer, kid), 1):
            say("%2d. %s" % (i, step))
        return kid
    say(f"pgw provision decommission: {what}")
    board = Board(args.port, args.baud) if args.port else None
    try:
        if board is not None:
            board.ready()
            ident = board.identity()
            if ident is None:
                raise ProvisionError("no_key", f"the board on {args.port} has no key: nothing to revoke")
            if kid is not None and ident[0] != kid:
                raise ProvisionError("usage", f"the board's kid is {ident[0].hex()}, not --kid {kid.hex()}")
            kid = ident[0]
        _revoke(args, installer, pinned, kid, say)
        if board is None:
            return kid
        answer = board.ask("identity wipe " + kid.hex()).strip()
        if not answer.startswith("wiped"):
            raise ProvisionError("board", "`identity wipe`: " + answer)
        say(" 2. board: " + answer)
        board.wait_reboot()
    finally:
        if board is not None:
            board.close()
    board = Board(args.port, args.baud)
    try:
        board.ready(timeout=60)
        if board.identity() is not None:
            raise ProvisionError("check_failed", "the board still shows a key after the wipe")
        host = _field_line(board.ask("config get mqtt.host"), "mqtt.host")
    finally:
        board.close()
    if host != 'mqtt.host ""':
        raise ProvisionError("check_failed", f"the board's config was not reset: {host}")
    say(" 3. board: back with no key and the default config")
    return kid


def _decommission_steps(args, installer, kid):
    steps = ["on the board's console: `identity`, the kid to revoke" if args.port else f"the kid {kid.hex()}",
             f"revoke it at the hub: a request signed by installer {kid_of(installer.public_key()).hex()} on "
             f"{reg.register_topic(args.community)}; wait for the hub's signed answer"]
    if args.port:
        steps += ["on the board's console: `identity wipe KID`: key, config and journal deleted, reboot",
                  "check the board's answers: no key, the default config"]
    return steps


def _revoke(args, installer, pinned, kid, say):
    hub = HubLink(args.hub, args.community, args.timeout)
    try:
        hub_key = hub.hub_key(pinned)
        answer = hub.request(registration(installer, args.community, reg.REVOKE, kid=kid),
                             kid_of(installer.public_key()), hub_key)
    finally:
        hub.close()
    if answer["outcome"] == "revoked":
        say(f" 1. hub: kid {kid.hex()} was revoked already")
    elif answer["outcome"] != "ok":
        raise ProvisionError("refused", f"the hub refused the revocation: {answer['detail']}")
    else:
        say(f" 1. hub: {answer['detail']}")


def add_arguments(p):
    p.add_argument("action", nargs="?", choices=("keygen", "decommission"),
                   help="keygen: make an installer key; decommission: revoke the board's key and wipe it; "
                        "none: provision the board")
    p.add_argument("--port", help="the board's serial port (or a virtual board's link)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--hub", metavar="URL", help="the broker the hub uses, mqtt://HOST:PORT")
    p.add_argument("--community", help="the energy community (the hub's --community)")
    p.add_argument("--installer-key", metavar="FILE", help="the installer's private key (pgw provision keygen)")
    p.add_argument("--hub-key", metavar="FILE",
                   help="pin the hub's key (its state directory's hub.cose): refuse any other on the broker")
    p.add_argument("--config", metavar="FILE", help="a device config (JSON, docs/config.md) to start from")
    p.add_argument("--wifi-ssid", metavar="SSID")
    p.add_argument("--wifi-password", metavar="PASSWORD")
    p.add_argument("--meter", action="append", default=[], metavar="SPEC",
                   help="a meter: name=grid,protocol=modbus-tcp,host=10.0.0.5,unit=1,profile=sdm630 "
                        "or a JSON object (docs/meters.md); repeatable, added to the config's")
    p.add_argument("--meters", metavar="FILE", help="the meters: a JSON list, in place of the config's")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="any field, as `config set` takes it: limits.fuse_a=25, household.reserve_pct=30")
    p.add_argument("--ota-key", metavar="FILE", help="the release key that signs OTA manifests (COSE_Key or PEM)")
    p.add_argument("--name", help="the household's name, registered with the key and printed on the label")
    p.add_argument("--label-out", metavar="FILE", help="write the label to FILE too")
    p.add_argument("--rotate", action="store_true", help="re-provisioning: a new key replaces the board's")
    p.add_argument("--keep-config", action="store_true",
                   help="leave the board's /config.json as it is (a rotation alone): the board is only rebooted")
    p.add_argument("--replaces", metavar="KID", help="register the board's key in place of KID (after a "
                   "rotation the hub did not take)")
    p.add_argument("--kid", metavar="KID", help="decommission: the key to revoke when the board is not at hand")
    p.add_argument("--dry-run", action="store_true", help="print the steps and the config; touch nothing")
    p.add_argument("--timeout", type=float, default=20.0, metavar="S",
                   help="seconds to wait for the broker and the hub's answers (default 20)")
    p.add_argument("--out", metavar="FILE", help="keygen: where the installer's private key goes (PEM)")


def run(args):
    if args.action == "keygen":
        if not args.out:
            raise ProvisionError("usage", "keygen needs --out FILE")
        kid, cose_key = keygen(args.out)
        out = Path(args.out)
        print(f"installer key  {out} (private: it stays with the installer; mode 600)")
        print(f"public key     {out.with_suffix('.cose')} (for the hub: pgw hub --installer-key "
              f"{out.with_suffix('.cose')})")
        print(f"kid            {kid.hex()}")
        print(f"cose_key       {cose_key.hex()}")
        return 0
    missing = [o for o, v in (("--hub", args.hub), ("--community", args.community)) if not v]
    if args.action is None and not args.port:
        missing.append("--port")
    if missing:
        raise ProvisionError("usage", "needs %s: pgw provision --port P --hub mqtt://HOST:PORT --community C "
                             "--installer-key FILE (docs/field.md, \"Provisioning\")" % " ".join(missing))
    if args.action == "decommission":
        decommission(args)
    else:
        provision(args)
    return 0
