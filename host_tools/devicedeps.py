"""Device-side MicroPython packages, fetched by name and pinned version.

The board needs a few packages from micropython-lib (``umqtt.simple``, ...).
They are not copied into this repository: ``pyproject.toml`` pins each one
under ``[tool.pgw.device-dependencies."<name>"]``::

    version = "1.3.4"                 # exact release
    files   = ["umqtt/simple.py"]     # paths inside the sdist's top folder,
                                      # which are also the paths under /lib
    sha256  = "<hex>"                 # of the sdist archive the index serves

and :func:`fetch` gets the sdist from the package index pip is configured
with (PEP 503 simple pages; ``pip download`` cannot be used because those old
sdists have no ``setup.py``), checks its sha256, and extracts only the listed
files. Cache, under the repository root::

    build/device-deps/<normalized-name>-<version>/
        <sdist filename>.tar.gz       # kept while its sha256 matches the pin
        lib/<file>                    # extracted files, mirror of the board's /lib

A cached archive whose sha256 matches the pin is used without any network
access, so a second deploy works offline.

Command line (prints one line per fetched file)::

    python -m host_tools.devicedeps
    python -m host_tools.devicedeps --sha256 NAME==VERSION   # for a new pin
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import http.client
import os
import re
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import unquote, urldefrag, urljoin, urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PYPROJECT = REPO_ROOT / "pyproject.toml"
DEFAULT_CACHE_DIR = REPO_ROOT / "build" / "device-deps"

_PIP_DEFAULT_TIMEOUT = 15.0  # seconds, pip's own default
_MAX_ARCHIVE_BYTES = 64 * 1024 * 1024  # an sdist of a device package is a few KB
_CHUNK = 64 * 1024
_SDIST_SUFFIX = ".tar.gz"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_PIP_DEFAULT_INDEX_CODE = (
    "from pip._internal.models.index import PyPI; print(PyPI.simple_url)")


class DeviceDependencyError(RuntimeError):
    """A device package could not be pinned, fetched, verified or extracted.

    ``package`` is ``"name==version"`` when the error concerns one package,
    ``index_urls`` the indexes that were tried (credentials removed).
    """

    def __init__(self, message: str, package: str | None = None, index_urls=()):
        super().__init__(message)
        self.package = package
        self.index_urls = tuple(index_urls)


@dataclass(frozen=True)
class DevicePackage:
    name: str
    version: str
    sha256: str | None
    files: tuple[str, ...]

    @property
    def normalized_name(self) -> str:
        return normalize_name(self.name)

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def cache_name(self) -> str:
        return f"{self.normalized_name}-{self.version}"


def normalize_name(name: str) -> str:
    """PEP 503 normalisation: lowercase, runs of ``-``, ``_``, ``.`` -> ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- pins -------------------------------------------------------------------


def load_pins(pyproject_path: str | os.PathLike | None = None) -> list[DevicePackage]:
    """The packages pinned under ``[tool.pgw.device-dependencies]``."""
    path = Path(pyproject_path) if pyproject_path is not None else DEFAULT_PYPROJECT
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DeviceDependencyError(f"cannot read device pins from {path}: {exc}") from exc
    table = data.get("tool", {}).get("pgw", {}).get("device-dependencies", {})
    return [_parse_pin(name, spec, path) for name, spec in table.items()]


def _parse_pin(name: str, spec, path: Path) -> DevicePackage:
    where = f'{path}: [tool.pgw.device-dependencies."{name}"]'
    if not isinstance(spec, dict):
        raise DeviceDependencyError(f"{where} must be a table", name)
    version = spec.get("version")
    if not isinstance(version, str) or not version.strip():
        raise DeviceDependencyError(f"{where}: 'version' must be a non-empty string", name)
    files = spec.get("files")
    if not isinstance(files, list) or not files or not all(isinstance(x, str) for x in files):
        raise DeviceDependencyError(f"{where}: 'files' must be a non-empty list of paths", name)
    for file in files:
        if not _is_safe_relative(file):
            raise DeviceDependencyError(
                f"{where}: file {file!r} must be a relative path without '..'", name)
    sha256 = spec.get("sha256")
    if sha256 is not None:
        if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256.lower()):
            raise DeviceDependencyError(f"{where}: 'sha256' must be 64 hex digits", name)
        sha256 = sha256.lower()
    normalized_files = tuple(PurePosixPath(x).as_posix() for x in files)
    return DevicePackage(name, version.strip(), sha256, normalized_files)


def _is_safe_member(name: str) -> bool:
    """Relative, without '..', and no Windows drive or separators ("./" is fine)."""
    if name.startswith("/") or "\\" in name or PureWindowsPath(name).drive:
        return False
    return ".." not in PurePosixPath(name).parts


def _is_safe_relative(name: str) -> bool:
    return _is_safe_member(name) and bool(PurePosixPath(name).parts)


# --- pip's configuration ----------------------------------------------------


class _PipConfig:
    """pip's settings as pip itself reports them; asked for only when needed.

    Precedence is pip's: ``PIP_*`` environment variables, then the
    ``[download]`` and ``[install]`` sections, then ``[global]``, each as
    merged across the global/user/site/PIP_CONFIG_FILE files by
    ``pip config list``.
    """

    _SECTIONS = ("download", "install", "global")

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable
        self._items: dict[str, str] | None = None
        self._index_urls: list[str] | None = None

    def index_urls(self) -> list[str]:
        if self._index_urls is None:
            self._index_urls = _index_urls(self)
        return list(self._index_urls)

    def get(self, *options: str) -> str | None:
        for option in options:
            value = os.environ.get("PIP_" + option.upper().replace("-", "_"))
            if value is not None:  # set, even empty, overrides the files as in pip
                return value
        items = self._file_items()
        for section in self._SECTIONS:
            for option in options:
                value = items.get(f"{section}.{option}")
                if value:
                    return value
        return None

    def _file_items(self) -> dict[str, str]:
        if self._items is None:
            out = self._run(["-m", "pip", "config", "list"], "`pip config list`",
                            "is pip installed for this interpreter?")
            self._items = parse_pip_config_list(out)
        return self._items

    def default_index_url(self) -> str:
        # pip keeps its built-in default index in an internal module; ask the
        # pip that is installed rather than writing the address down here.
        hint = ("pip's internals may have changed; name the index with PIP_INDEX_URL "
                "or pip's index-url setting")
        out = self._run(["-c", _PIP_DEFAULT_INDEX_CODE], "pip's built-in default index", hint)
        url = out.strip()
        if not url.startswith(("https://", "http://", "file://")):
            raise DeviceDependencyError(
                f"pip's built-in default index looks wrong ({url!r}); {hint}")
        return url

    def _run(self, args: list[str], what: str, hint: str) -> str:
        try:
            proc = subprocess.run([self.python, *args], capture_output=True, text=True,
                                  timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise DeviceDependencyError(
                f"cannot run {self.python} to read {what}: {exc}") from exc
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            detail = lines[-1] if lines else f"exit status {proc.returncode}"
            raise DeviceDependencyError(
                f"cannot read {what} with {self.python}: {detail} ({hint})")
        return proc.stdout


def parse_pip_config_list(text: str) -> dict[str, str]:
    """``pip config list`` output (``section.key='value'`` lines) as a dict.

    The ``:env:`` entries are dropped: environment variables are read
    directly, so they win whichever pip printed them.
    """
    items = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith(":env:"):
            continue
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        items[key] = str(value)
    return items


def pip_index_urls(*, python: str | None = None) -> list[str]:
    """The index URLs pip would use: index-url first, then extra-index-urls.

    ``python`` is the interpreter whose pip is asked (default: this one).
    """
    return _PipConfig(python).index_urls()


def _index_urls(config: _PipConfig) -> list[str]:
    if (config.get("no-index") or "").strip().lower() in _TRUE:
        return []
    index_url = (config.get("index-url") or "").strip() or config.default_index_url()
    extra = (config.get("extra-index-url") or "").split()
    urls: list[str] = []
    seen = set()
    for url in [index_url, *extra]:
        url = url.rstrip("/")
        if url and url not in seen:
            seen.add(url)
            urls.append(url)
    return urls


# --- fetching ---------------------------------------------------------------


class _NotFound(Exception):
    pass


class _Session:
    """Opens index pages and archives; file:// and http(s)://."""

    def __init__(self, config: _PipConfig):
        self.config = config
        self._credentials: dict[str, str] = {}
        self._ssl: ssl.SSLContext | None = None
        self._timeout: float | None = None

    def add_index(self, url: str) -> str:
        """Remember credentials written in an index URL; return the URL without them."""
        parts = urlsplit(url)
        userinfo, at, host = parts.netloc.rpartition("@")
        if not at:
            return url
        user, _, password = userinfo.partition(":")
        token = f"{unquote(user)}:{unquote(password)}".encode()
        self._credentials[host.lower()] = "Basic " + base64.b64encode(token).decode()
        return urlunsplit(parts._replace(netloc=host))

    def open(self, url: str):
        """A file-like response for ``url``; raises _NotFound or OSError."""
        url, _ = urldefrag(url)
        parts = urlsplit(url)
        if parts.scheme == "file":
            path = Path(urllib.request.url2pathname(parts.path))
            if path.is_dir():
                path = path / "index.html"  # as pip reads a local simple index
            if not path.is_file():
                raise _NotFound(url)
            return urllib.request.urlopen(path.as_uri())
        if parts.scheme not in ("http", "https"):
            raise OSError(f"unsupported URL scheme {parts.scheme!r}")
        request = urllib.request.Request(
            url, headers={"Accept": "text/html", "User-Agent": "pgw-devicedeps"})
        auth = self._credentials.get(parts.netloc.lower())
        if auth:  # unredirected: never sent on to another host
            request.add_unredirected_header("Authorization", auth)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout(),
                                          context=self.ssl_context())
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise _NotFound(url) from exc
            raise

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            cert = self.config.get("cert")
            if cert and os.path.isdir(cert):
                self._ssl = ssl.create_default_context(capath=cert)
            elif cert:
                self._ssl = ssl.create_default_context(cafile=cert)
            else:
                self._ssl = ssl.create_default_context()
        return self._ssl

    def timeout(self) -> float:
        if self._timeout is None:
            value = self.config.get("timeout", "default-timeout")
            try:
                self._timeout = float(value) if value else _PIP_DEFAULT_TIMEOUT
            except ValueError:
                self._timeout = _PIP_DEFAULT_TIMEOUT
        return self._timeout


class _LinkParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.base: str | None = None
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "base" and attrs.get("href") and self.base is None:
            self.base = attrs["href"]
        elif tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


def _redact(url: str) -> str:
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"***@{host}")) if at else url


def _sdist_version(filename: str, normalized_name: str) -> str | None:
    """The version of an sdist filename for this project, else None."""
    if not filename.endswith(_SDIST_SUFFIX) or "/" in filename or "\\" in filename:
        return None
    name, sep, version = filename[: -len(_SDIST_SUFFIX)].rpartition("-")
    if not sep or normalize_name(name) != normalized_name:
        return None
    return version


def _find_sdist(session: _Session, index_url: str, name: str, version: str):
    """(archive URL, sha256 from the URL fragment or None) on one index.

    Raises _NotFound with a reason when the index has no such sdist.
    """
    normalized = normalize_name(name)
    page_url = f"{index_url.rstrip('/')}/{normalized}/"
    try:
        with session.open(page_url) as response:
            base = response.geturl() or page_url
            charset = response.headers.get_content_charset() or "utf-8"
            html = response.read().decode(charset, errors="replace")
    except _NotFound:
        raise _NotFound(f"no project page {normalized}/") from None
    parser = _LinkParser()
    parser.feed(html)
    base = urljoin(base, parser.base) if parser.base else base
    versions = []
    for href in parser.hrefs:
        url = urljoin(base, href)
        plain, fragment = urldefrag(url)
        filename = unquote(plain.rsplit("/", 1)[-1])
        found = _sdist_version(filename, normalized)
        if found is None:
            continue
        if found == version:
            algo, _, digest = fragment.partition("=")
            return url, (digest.lower() if algo == "sha256" else None)
        versions.append(found)
    listed = ", ".join(versions) if versions else "none"
    raise _NotFound(f"no {_SDIST_SUFFIX} sdist of version {version} "
                    f"(sdist versions listed: {listed})")


def _download(session: _Session, url: str, dest: Path) -> str:
    """Stream ``url`` into ``dest``; return its sha256."""
    digest = hashlib.sha256()
    size = 0
    tmp = dest.with_name(dest.name + ".part")
    try:
        with session.open(url) as response, open(tmp, "wb") as out:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > _MAX_ARCHIVE_BYTES:
                    raise OSError(f"archive larger than {_MAX_ARCHIVE_BYTES} bytes")
                digest.update(chunk)
                out.write(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest()


def _download_sdist(session: _Session, index_urls: list[str], name: str, version: str,
                    dest_dir: Path, expected_sha256: str | None) -> tuple[Path, str, str]:
    """Try each index in order; (archive path, sha256, URL) of the first good one."""
    pin = f"{name}=={version}"
    tried = []
    for index_url in index_urls:
        shown = _redact(index_url)
        index_url = session.add_index(index_url)
        try:
            url, advertised = _find_sdist(session, index_url, name, version)
        except _NotFound as exc:
            tried.append(f"{shown}: {exc}")
            continue
        except (OSError, ValueError, http.client.HTTPException) as exc:
            tried.append(f"{shown}: network error reading the project page: {exc}")
            continue
        if expected_sha256 and advertised and advertised != expected_sha256:
            tried.append(f"{shown}: sha256 mismatch: index lists {advertised}, "
                         f"pinned {expected_sha256}")
            continue
        filename = unquote(urldefrag(url)[0].rsplit("/", 1)[-1])
        dest = dest_dir / filename
        try:
            sha = _download(session, url, dest)
        except _NotFound:
            tried.append(f"{shown}: archive {_redact(url)} not found")
            continue
        except (OSError, ValueError, http.client.HTTPException) as exc:
            tried.append(f"{shown}: network error downloading {_redact(url)}: {exc}")
            continue
        wanted = expected_sha256 or advertised
        if wanted and sha != wanted:
            dest.unlink(missing_ok=True)
            source = "pinned" if expected_sha256 else "listed by the index"
            tried.append(f"{shown}: sha256 mismatch for {filename}: got {sha}, {source} {wanted}")
            continue
        return dest, sha, url
    if not index_urls:
        tried.append("pip is configured with no index (no-index)")
    raise DeviceDependencyError(
        f"{pin}: could not fetch the sdist from pip's configured index(es):\n  "
        + "\n  ".join(tried),
        pin, [_redact(u) for u in index_urls])


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_archive(pkg_dir: Path, sha256: str) -> Path | None:
    for path in sorted(pkg_dir.glob("*" + _SDIST_SUFFIX)):
        if path.is_file() and _sha256_file(path) == sha256:
            return path
    return None


def _extract(archive: Path, package: DevicePackage, lib_dir: Path) -> dict[str, Path]:
    """Write the listed files of the archive (found under its top folder) to lib_dir."""
    pin = package.pin
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            by_path: dict[str, list[tarfile.TarInfo]] = {}
            for member in members:
                if not _is_safe_member(member.name):
                    raise DeviceDependencyError(
                        f"{pin}: archive {archive.name} has an unsafe member "
                        f"{member.name!r} (absolute path or '..'); refusing it", pin)
                parts = PurePosixPath(member.name).parts
                if len(parts) >= 2:
                    by_path.setdefault(PurePosixPath(*parts[1:]).as_posix(), []).append(member)
            contents = {}
            for file in package.files:
                found = by_path.get(file, [])
                if not found:
                    raise DeviceDependencyError(
                        f"{pin}: listed file {file!r} is not in archive {archive.name} "
                        "(looked under its top folder)", pin)
                if len(found) > 1:
                    raise DeviceDependencyError(
                        f"{pin}: listed file {file!r} appears {len(found)} times in "
                        f"archive {archive.name}", pin)
                member = found[0]
                if not member.isfile():
                    raise DeviceDependencyError(
                        f"{pin}: {member.name!r} in archive {archive.name} is not a "
                        "regular file", pin)
                contents[file] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DeviceDependencyError(f"{pin}: cannot read archive {archive}: {exc}", pin) from exc

    # Written only where the bytes differ, each by a rename: builds running
    # at once (parallel tests) read these files while another build is here.
    # Files an older pin left are not in the result, so nothing uses them.
    result = {}
    for file, data in contents.items():
        target = lib_dir.joinpath(*PurePosixPath(file).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != data:
            tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        result[file] = target
    return result


def _fetch(package: DevicePackage, cache_dir: Path, config: _PipConfig,
           index_urls: list[str] | None) -> dict[str, Path]:
    if not package.sha256:
        raise DeviceDependencyError(
            f"{package.pin}: no sha256 pinned; print it with "
            f"`python -m host_tools.devicedeps --sha256 {package.pin}` and add "
            f'sha256 = "..." to [tool.pgw.device-dependencies."{package.name}"]',
            package.pin)
    pkg_dir = cache_dir / package.cache_name
    pkg_dir.mkdir(parents=True, exist_ok=True)
    archive = _cached_archive(pkg_dir, package.sha256)
    if archive is None:
        urls = list(index_urls) if index_urls is not None else config.index_urls()
        archive, _, _ = _download_sdist(_Session(config), urls, package.name,
                                        package.version, pkg_dir, package.sha256)
    return _extract(archive, package, pkg_dir / "lib")


def _cache_root(cache_dir) -> Path:
    return Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR


def fetch(package: DevicePackage, cache_dir: str | os.PathLike | None = None,
          index_urls: list[str] | None = None) -> dict[str, Path]:
    """Fetch one pinned package; map each device path (under /lib) to its local file.

    ``cache_dir`` defaults to ``build/device-deps``; ``index_urls`` to
    :func:`pip_index_urls`, asked only when the archive is not cached.
    """
    return _fetch(package, _cache_root(cache_dir), _PipConfig(), index_urls)


def _fetch_each(packages, cache_dir, index_urls):
    """(package, device path, local file) for every file; pip is asked at most once."""
    config = _PipConfig()
    owner: dict[str, str] = {}
    for package in packages:
        for device_path, local in _fetch(package, _cache_root(cache_dir), config,
                                         index_urls).items():
            if device_path in owner:
                raise DeviceDependencyError(
                    f"/lib/{device_path} is provided by both {owner[device_path]} and "
                    f"{package.pin}", package.pin)
            owner[device_path] = package.pin
            yield package, device_path, local


def fetch_all(pyproject_path: str | os.PathLike | None = None,
              cache_dir: str | os.PathLike | None = None,
              index_urls: list[str] | None = None) -> dict[str, Path]:
    """Fetch every pinned package; one mapping of device path -> local file."""
    return {device_path: local for _, device_path, local
            in _fetch_each(load_pins(pyproject_path), cache_dir, index_urls)}


def sdist_sha256(name: str, version: str, index_urls: list[str] | None = None) -> tuple[str, str]:
    """(sha256, URL) of the sdist an index serves for ``name==version``: for new pins.

    Checked only against the index's own ``#sha256=``, when it gives one.
    """
    config = _PipConfig()
    urls = list(index_urls) if index_urls is not None else config.index_urls()
    with tempfile.TemporaryDirectory() as tmp:
        _, sha, url = _download_sdist(_Session(config), urls, name, version, Path(tmp), None)
    return sha, _redact(url)


# --- command line -----------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m host_tools.devicedeps",
        description="Fetch the pinned device-side MicroPython packages from pip's index.")
    parser.add_argument("--pyproject", type=Path, default=None,
                        help="pyproject.toml with the pins (default: the repository's)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache directory (default: build/device-deps)")
    parser.add_argument("--sha256", metavar="NAME==VERSION",
                        help="download NAME==VERSION and print its sha256 for a new pin")
    args = parser.parse_args(argv)
    try:
        if args.sha256:
            name, sep, version = args.sha256.partition("==")
            if not sep or not name or not version:
                parser.error("--sha256 takes NAME==VERSION")
            sha, url = sdist_sha256(name.strip(), version.strip())
            print(f"# {url}")
            print(f'[tool.pgw.device-dependencies."{name.strip()}"]')
            print(f'version = "{version.strip()}"')
            print(f'sha256 = "{sha}"')
            return 0
        for package, device_path, local in _fetch_each(load_pins(args.pyproject),
                                                       args.cache_dir, None):
            print(f"{package.pin}  /lib/{device_path}  <- {_shown_path(local)}")
    except DeviceDependencyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
