"""A real MQTT broker on the loopback interface, for tests and the demo.

Mosquitto when it is installed (Debian's ``mosquitto`` package, 2.0.x);
otherwise the embedded amqtt broker (the ``broker`` extra), run as a child
process of this same module. On a root Debian machine (CI) ``--ensure``
installs Mosquitto with apt-get, so tests there always run against it.

    >>> with Broker(tls=True) as broker:
    ...     broker.kind, broker.port, broker.tls_port, broker.ca_pem

``stop()`` and ``start()`` again keep the same ports: a test can take the
broker away for an outage and bring it back where the clients expect it.

Command line::

    python -m host_tools.broker --ensure        # make sure a broker is available
    python -m host_tools.broker --port 1883     # run one in the foreground
    python -m host_tools.broker --embedded --port 1883   # the amqtt child process

See docs/broker.md.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

KINDS = ("mosquitto", "amqtt")
REPO_ROOT = Path(__file__).resolve().parent.parent

# Debian installs the broker in /usr/sbin, which a normal user's PATH lacks.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_READY_TIMEOUT = 15.0  # seconds; amqtt's imports take about a second
_STOP_TIMEOUT = 10.0
_POLL = 0.02  # seconds between connect attempts, spent waiting on the process
_LOG_TAIL = 2000  # characters of the broker's log quoted in errors
_CERT_DAYS = 30
_PROBE_ID = b"pgw-broker-ready"
# MQTT 3.1.1 CONNECT (clean session, no keepalive) for the readiness probe.
_PROBE_CONNECT = (bytes([0x10, 12 + len(_PROBE_ID)]) + b"\x00\x04MQTT\x04\x02\x00\x00"
                  + len(_PROBE_ID).to_bytes(2, "big") + _PROBE_ID)
_CONNACK_OK = b"\x20\x02\x00\x00"
_DISCONNECT = b"\xe0\x00"


class BrokerError(RuntimeError):
    """The broker could not be found, installed, started or configured.

    ``reason`` is one of: ``"bad-kind"``, ``"unavailable"``, ``"install-failed"``,
    ``"start-failed"`` (the process exited; the message quotes its log),
    ``"timeout"`` (not accepting connections in time), ``"bad-port"``.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# --- what is installed -------------------------------------------------------


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` binary, looking in the sbin folders too."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN_DIRS])
    return shutil.which("mosquitto", path=path)


def amqtt_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("amqtt") is not None


def detect_kind() -> str | None:
    """The broker ``Broker()`` runs here: ``PGW_BROKER`` if set, else Mosquitto if
    installed, else amqtt if installed, else None."""
    forced = os.environ.get("PGW_BROKER", "").strip()
    if forced:
        return forced
    if find_mosquitto():
        return "mosquitto"
    if amqtt_available():
        return "amqtt"
    return None


def version(kind: str) -> str:
    """The version of an installed broker, or "?"."""
    if kind == "mosquitto":
        binary = find_mosquitto()
        if binary:
            try:
                out = subprocess.run([binary, "-h"], capture_output=True, text=True,
                                     timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired):
                return "?"
            words = out.split()
            if len(words) >= 3 and words[1] == "version":
                return words[2]
    elif kind == "amqtt":
        from importlib import metadata

        try:
            return metadata.version("amqtt")
        except metadata.PackageNotFoundError:
            pass
    return "?"


def describe() -> str:
    """One line saying which broker tests get here, e.g. for pytest's header."""
    kind = detect_kind()
    if kind is None:
        return "none (install mosquitto, or the 'broker' extra for amqtt)"
    if kind not in KINDS:
        return f"PGW_BROKER={kind!r} is not one of {', '.join(KINDS)}"
    if kind == "mosquitto":
        return f"mosquitto {version(kind)} ({find_mosquitto()})"
    why = "forced by PGW_BROKER" if os.environ.get("PGW_BROKER") else "mosquitto not installed"
    return f"{kind} {version(kind)} (embedded; {why})"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def ensure_mosquitto(quiet: bool = True) -> str | None:
    """Path of Mosquitto, installing it with apt-get if missing and allowed.

    Installs only as root on a Debian-like system (CI); elsewhere returns None
    and ``Broker()`` uses the embedded amqtt. Raises BrokerError
    ("install-failed") when apt-get was tried and failed.
    """
    found = find_mosquitto()
    if found or not _is_root() or not shutil.which("apt-get") \
            or not os.path.exists("/etc/debian_version"):
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "mosquitto"]
    out = subprocess.DEVNULL if quiet else None
    if subprocess.run(install, env=env, stdout=out, stderr=out).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=out, stderr=out)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise BrokerError("install-failed", "apt-get install mosquitto failed:\n"
                              + (result.stdout + result.stderr)[-_LOG_TAIL:])
    found = find_mosquitto()
    if not found:
        raise BrokerError("install-failed", "apt-get installed mosquitto but no "
                          "mosquitto binary is on PATH or in " + ", ".join(_SBIN_DIRS))
    return found


# --- TLS -------------------------------------------------------------------


def write_tls_files(directory, hosts=("localhost", "127.0.0.1"), days=_CERT_DAYS):
    """A throwaway CA and a server certificate for ``hosts`` (EC P-256).

    Returns the paths (ca.pem, server.pem, server.key) in ``directory``.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    def usage(**allowed):
        names = ("digital_signature", "content_commitment", "key_encipherment",
                 "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
                 "encipher_only", "decipher_only")
        return x509.KeyUsage(**{name: allowed.get(name, False) for name in names})

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pgw throwaway test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))

    alt_names = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))

    ca_pem, cert_pem, key_pem = (directory / "ca.pem", directory / "server.pem",
                                 directory / "server.key")
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


# --- the broker --------------------------------------------------------------


def _free_ports(host: str, count: int) -> list[int]:
    # Hold every socket until all are bound, so the ports differ.
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Broker:
    """An MQTT 3.1.1/5 broker process listening on ``host`` (loopback only).

    ``port``/``tls_port`` 0 pick free ports at the first ``start()``; later starts
    reuse them. ``kind`` is "mosquitto" or "amqtt"; None chooses as
    :func:`detect_kind`. Files (config, log, TLS) live in ``workdir``, a
    temporary folder removed by ``close()`` unless one was given.
    """

    def __init__(self, port: int = 0, tls: bool = False, tls_port: int = 0,
                 kind: str | None = None, host: str = "127.0.0.1",
                 workdir: str | os.PathLike | None = None,
                 ready_timeout: float = _READY_TIMEOUT, queue_limit: int | None = None):
        kind = kind or detect_kind()
        if kind is None:
            raise BrokerError("unavailable", "no MQTT broker here: install mosquitto "
                              "(apt-get install mosquitto) or the 'broker' extra (amqtt)")
        if kind not in KINDS:
            raise BrokerError("bad-kind", f"unknown broker kind {kind!r}; "
                              f"expected one of {', '.join(KINDS)}")
        for name, value in (("port", port), ("tls_port", tls_port)):
            if not isinstance(value, int) or not 0 <= value <= 65535:
                raise BrokerError("bad-port", f"{name} must be 0..65535, not {value!r}")
        self.kind = kind
        self.host = host
        self.port = port
        self.tls = bool(tls or tls_port)
        self.tls_port = tls_port if self.tls else None
        self.ready_timeout = ready_timeout
        # Mosquitto's max_queued_messages (0: no limit): a benchmark's flood
        # must reach a slow subscriber instead of being dropped at 1,000.
        self.queue_limit = queue_limit
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.ca_pem = self.cert_pem = self.key_pem = None
        self._proc = None
        self._log = None
        self._atexit = False

    # paths
    @property
    def log_path(self) -> Path | None:
        return self.workdir / "broker.log" if self.workdir else None

    @property
    def ca_der(self) -> bytes:
        """The CA certificate in DER form (what MicroPython's ssl takes as cadata)."""
        import ssl

        return ssl.PEM_cert_to_DER_cert(self.ca_pem.read_text())

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the broker process to exit; its exit code (None if not started)."""
        return self._proc.wait(timeout) if self._proc is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def start(self) -> "Broker":
        """Start the broker (again) and return once it accepts TCP connections."""
        if self.running:
            return self
        if self.kind == "mosquitto" and not find_mosquitto():
            raise BrokerError("unavailable", "mosquitto is not installed (as root: "
                              "python -m host_tools.broker --ensure)")
        if self.kind == "amqtt" and not amqtt_available():
            raise BrokerError("unavailable", "amqtt is not installed: pip install "
                              "-c constraints.txt -e '.[broker]'")
        self._prepare()
        cmd = self._command()
        self._log = open(self.log_path, "ab")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        if not self._atexit:
            atexit.register(self.close)
            self._atexit = True
        try:
            self._wait_ready(self.port, tls=False)
            if self.tls:
                self._wait_ready(self.tls_port, tls=True)
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the process; the ports and files are kept for ``start()``."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop, and remove the temporary folder."""
        self.stop()
        if self._atexit:
            atexit.unregister(self.close)
            self._atexit = False
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        tls = f", tls_port={self.tls_port}" if self.tls else ""
        return f"<Broker {self.kind} {self.host}:{self.port}{tls} running={self.running}>"

    # internals
    def _prepare(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="pgw-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        wanted = [p for p in (self.port, self.tls_port) if p == 0]
        if wanted:
            free = iter(_free_ports(self.host, len(wanted)))
            if self.port == 0:
                self.port = next(free)
            if self.tls and self.tls_port == 0:
                self.tls_port = next(free)
        if self.tls and self.ca_pem is None:
            hosts = ("localhost", self.host) if self.host != "localhost" else ("localhost",)
            self.ca_pem, self.cert_pem, self.key_pem = write_tls_files(self.workdir, hosts)

    def _command(self) -> list[str]:
        if self.kind == "mosquitto":
            config = self.workdir / "mosquitto.conf"
            config.write_text(self._mosquitto_config())
            return [find_mosquitto(), "-c", str(config)]
        cmd = [sys.executable, "-m", "host_tools.broker", "--embedded",
               "--host", self.host, "--port", str(self.port)]
        if self.tls:
            cmd += ["--tls-port", str(self.tls_port), "--certfile", str(self.cert_pem),
                    "--keyfile", str(self.key_pem)]
        return cmd

    def _mosquitto_config(self) -> str:
        lines = [
            "# A throwaway test broker, written by host_tools.broker.",
            "per_listener_settings false",
            "allow_anonymous true",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            f"listener {self.port} {self.host}",
        ]
        if self.queue_limit is not None:
            lines.insert(-1, f"max_queued_messages {int(self.queue_limit)}")
        if _is_root():
            # As root, Mosquitto would switch to the 'mosquitto' user, which
            # cannot read this private temporary folder.
            lines.insert(2, "user root")
        if self.tls:
            lines += [f"listener {self.tls_port} {self.host}",
                      f"cafile {self.ca_pem}", f"certfile {self.cert_pem}",
                      f"keyfile {self.key_pem}"]
        return "\n".join(lines) + "\n"

    def _wait_ready(self, port: int, tls: bool) -> None:
        import time

        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._proc.poll() is not None:
                raise BrokerError("start-failed", f"{self.kind} exited with code "
                                  f"{self._proc.returncode} before listening on "
                                  f"{self.host}:{port}; its log:\n"
                                  + self.log_text()[-_LOG_TAIL:])
            if self._answers(port, tls):
                return
            if time.monotonic() > deadline:
                raise BrokerError("timeout", f"{self.kind} did not answer MQTT on "
                                  f"{self.host}:{port} within {self.ready_timeout} s; "
                                  "its log:\n" + self.log_text()[-_LOG_TAIL:])
            try:
                self._proc.wait(timeout=_POLL)  # returns at once if it exits
            except subprocess.TimeoutExpired:
                pass

    def _answers(self, port: int, tls: bool) -> bool:
        """Whether our broker accepts an MQTT session on the port.

        A CONNACK (over TLS verified against our CA) rather than a bare TCP
        connect, so that another program holding the port is not taken for it.
        """
        sock = None
        try:
            sock = socket.create_connection((self.host, port), timeout=1.0)
            if tls:
                import ssl

                context = ssl.create_default_context(cafile=str(self.ca_pem))
                sock = context.wrap_socket(sock, server_hostname="localhost")
            sock.sendall(_PROBE_CONNECT)
            reply = b""
            while len(reply) < len(_CONNACK_OK):
                chunk = sock.recv(len(_CONNACK_OK) - len(reply))
                if not chunk:
                    return False
                reply += chunk
            sock.sendall(_DISCONNECT)
            return reply == _CONNACK_OK
        except OSError:  # refused, timed out, reset, TLS failure
            return False
        finally:
            if sock is not None:
                sock.close()


# --- the embedded broker (child process) ------------------------------------


def run_embedded(host: str, port: int, tls_port: int | None = None,
                 certfile: str | None = None, keyfile: str | None = None) -> None:
    """Serve amqtt until SIGTERM or SIGINT."""
    import asyncio
    import logging
    import signal

    from amqtt.broker import Broker as AmqttBroker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)
    listeners = {"default": {"type": "tcp", "bind": f"{host}:{port}"}}
    if tls_port:
        listeners["tls"] = {"type": "tcp", "bind": f"{host}:{tls_port}", "ssl": True,
                            "certfile": certfile, "keyfile": keyfile}
    config = {
        "listeners": listeners,
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                    {"allow_anonymous": True}},
    }

    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

    # Two fixes to amqtt 0.12.1, so that tests behave as with Mosquitto:
    # 1. It ignores a client silent past its keepalive; MQTT 3.1.1 (3.1.2.10)
    #    has the server drop it, which publishes its will.
    def drop_silent_client(handler):
        if handler.writer is not None:
            asyncio.ensure_future(handler.writer.close())

    BrokerProtocolHandler.handle_read_timeout = drop_silent_client

    class PatchedBroker(AmqttBroker):
        async def _initialize_client_session(self, *args, **kwargs):
            handler, session = await super()._initialize_client_session(*args, **kwargs)
            if session.keep_alive > 0:  # the reader times out after this; allow 1.5 x
                session.keep_alive = (session.keep_alive * 3 + 1) // 2
            return handler, session

        # 2. It sends a connecting client the retained messages of every
        #    client's subscriptions; send only those of its own.
        async def _publish_retained_messages_for_subscription(self, subscription, session):
            subscribers = self._subscriptions.get(subscription[0], ())
            if any(s is session for s, _ in subscribers):
                await super()._publish_retained_messages_for_subscription(subscription, session)

    async def serve():
        broker = PatchedBroker(config)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await broker.start()
        await stopping.wait()
        await broker.shutdown()

    asyncio.run(serve())


# --- command line -----------------------------------------------------------


def _ensure() -> int:
    try:
        path = ensure_mosquitto(quiet=True)
    except BrokerError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        if os.environ.get("CI"):
            return 1  # CI must test against Mosquitto
        path = None
    if path:
        print(f"mqtt broker: mosquitto {version('mosquitto')} ({path})")
        return 0
    if amqtt_available():
        print("mqtt broker: mosquitto is not installed, so tests and the demo use the "
              "embedded amqtt broker (for Mosquitto: sudo apt-get install mosquitto)")
        return 0
    print("mqtt broker: none available: install mosquitto, or the 'broker' extra "
          "(make venv installs it)", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m host_tools.broker",
        description="Run a loopback MQTT broker (Mosquitto, or the embedded amqtt).")
    parser.add_argument("--ensure", action="store_true",
                        help="install Mosquitto if missing and allowed (root on Debian); "
                             "say which broker tests will use, and exit")
    parser.add_argument("--port", type=int, default=1883, help="plain MQTT port (1883)")
    parser.add_argument("--tls", action="store_true",
                        help="also a TLS listener, with a throwaway CA")
    parser.add_argument("--tls-port", type=int, default=None,
                        help="TLS port (8883 with --tls)")
    parser.add_argument("--kind", choices=KINDS, default=None,
                        help="which broker (default: mosquitto if installed)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="keep config, log and CA in this folder (default: temporary)")
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--certfile", help=argparse.SUPPRESS)
    parser.add_argument("--keyfile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.ensure:
        return _ensure()
    if args.embedded:
        run_embedded(args.host, args.port, args.tls_port, args.certfile, args.keyfile)
        return 0

    tls_port = args.tls_port if args.tls_port is not None else (8883 if args.tls else 0)
    # Ctrl-C must stop it even when started from a shell that ignores SIGINT
    # for background jobs (the ignore would be inherited).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        broker = Broker(port=args.port, tls=args.tls or bool(tls_port), tls_port=tls_port,
                        kind=args.kind, workdir=args.dir)
        broker.start()
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"{broker.kind} {version(broker.kind)} on {broker.host}:{broker.port}", flush=True)
        if broker.tls:
            print(f"TLS on {broker.host}:{broker.tls_port}, CA certificate: {broker.ca_pem}",
                  flush=True)
        print(f"log: {broker.log_path}; Ctrl-C stops it", flush=True)
        code = broker.wait()
        print(f"the broker exited (code {code}); its log:\n"
              + broker.log_text()[-_LOG_TAIL:], file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.close()


if __name__ == "__main__":
    sys.exit(main())
