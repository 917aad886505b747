"""host_tools.devicedeps: pins, pip's index configuration, fetch and cache.

Most tests build their own PEP 503 index in a temporary folder (file://) or
serve one over https on 127.0.0.1; one test fetches the real pinned
micropython-umqtt.simple through the index pip is configured with.
"""

import base64
import hashlib
import io
import os
import ssl
import subprocess
import sys
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from host_tools import devicedeps
from host_tools.devicedeps import (
    DeviceDependencyError,
    DevicePackage,
    fetch,
    fetch_all,
    load_pins,
    normalize_name,
    parse_pip_config_list,
    pip_index_urls,
)

NAME = "micropython-demo.pkg"
VERSION = "1.0.2"
SIMPLE_PY = b"class MQTTClient:\n    pass\n"


# --- helpers ----------------------------------------------------------------


def make_sdist(members, top=None):
    """gzip'd tar bytes; ``members`` maps path inside ``top`` (or absolute name) to bytes."""
    top = top if top is not None else f"{NAME}-{VERSION}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name if name.startswith(("/", "..")) else f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_index(root, archive, name=NAME, version=VERSION, fragment=True, other_links=()):
    """A PEP 503 index under ``root``: simple/<normalized>/index.html + files/.

    Returns (index URL, sha256 of the archive).
    """
    sha = hashlib.sha256(archive).hexdigest()
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    filename = f"{name}-{version}.tar.gz"
    (files / filename).write_bytes(archive)
    page = root / "simple" / normalize_name(name)
    page.mkdir(parents=True, exist_ok=True)
    href = f"../../files/{filename}" + (f"#sha256={sha}" if fragment else "")
    links = [f'<a href="{href}">{filename}</a>']
    links += [f'<a href="../../files/{other}">{other}</a>' for other in other_links]
    (page / "index.html").write_text(
        "<!DOCTYPE html><html><body>\n" + "<br/>\n".join(links) + "\n</body></html>\n")
    return (root / "simple").as_uri(), sha


def package(sha, files=("umqtt/simple.py",), name=NAME, version=VERSION):
    return DevicePackage(name, version, sha, tuple(files))


@pytest.fixture
def good_index(tmp_path):
    archive = make_sdist({"umqtt/simple.py": SIMPLE_PY, "PKG-INFO": b"Name: x\n"})
    url, sha = make_index(tmp_path / "index", archive)
    return url, sha


@pytest.fixture
def pip_env(tmp_path, monkeypatch):
    """Point pip at a config file of the test's own; returns a writer for it."""
    config = tmp_path / "pip.conf"
    config.write_text("")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "xdg-dirs"))
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    return config.write_text


def pip_default_index():
    from pip._internal.models.index import PyPI

    return PyPI.simple_url.rstrip("/")


# --- names and pins ---------------------------------------------------------


@pytest.mark.parametrize("name, normalized", [
    ("micropython-umqtt.simple", "micropython-umqtt-simple"),
    ("Micropython_Umqtt.Simple", "micropython-umqtt-simple"),
    ("a--b__c..d", "a-b-c-d"),
    ("a-_.b", "a-b"),
    ("plain", "plain"),
])
def test_normalize_name(name, normalized):
    assert normalize_name(name) == normalized


def test_repository_pins_umqtt_simple():
    pins = {p.name: p for p in load_pins()}
    umqtt = pins["micropython-umqtt.simple"]
    assert umqtt.version == "1.3.4"
    assert umqtt.files == ("umqtt/simple.py",)
    assert len(umqtt.sha256) == 64
    assert umqtt.cache_name == "micropython-umqtt-simple-1.3.4"


def test_load_pins_reads_and_validates(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[tool.pgw.device-dependencies."Some_Pkg"]\n'
        'version = "2.0"\nfiles = ["a/b.py", "c.py"]\n'
        f'sha256 = "{"AB" * 32}"\n')
    (pin,) = load_pins(pyproject)
    assert pin == DevicePackage("Some_Pkg", "2.0", "ab" * 32, ("a/b.py", "c.py"))

    pyproject.write_text("[project]\nname = 'x'\n")
    assert load_pins(pyproject) == []

    for bad, message in [
        ('version = "1"\nfiles = ["../x.py"]', "relative path"),
        ('version = "1"\nfiles = ["/lib/x.py"]', "relative path"),
        ('version = "1"\nfiles = []', "'files'"),
        ('files = ["x.py"]', "'version'"),
        ('version = "1"\nfiles = ["x.py"]\nsha256 = "123"', "'sha256'"),
    ]:
        pyproject.write_text(f'[tool.pgw.device-dependencies."p"]\n{bad}\n')
        with pytest.raises(DeviceDependencyError, match=message):
            load_pins(pyproject)


# --- pip's configuration ----------------------------------------------------


def test_parse_pip_config_list():
    text = (":env:.index-url='https://env.invalid/simple'\n"
            "global.extra-index-url='\\nfile:///a/simple\\nfile:///b/simple'\n"
            "global.index-url='https://files.invalid/simple'\n"
            "install.cert='/x.pem'\n")
    assert parse_pip_config_list(text) == {
        "global.extra-index-url": "\nfile:///a/simple\nfile:///b/simple",
        "global.index-url": "https://files.invalid/simple",
        "install.cert": "/x.pem",
    }


def test_index_urls_from_config_file_ordered_and_deduplicated(pip_env):
    pip_env("[global]\n"
            "index-url = https://mirror.invalid/simple/\n"
            "extra-index-url =\n"
            "    file:///srv/a/simple\n"
            "    https://mirror.invalid/simple\n"
            "    file:///srv/b/simple/\n"
            "    file:///srv/a/simple\n")
    assert pip_index_urls() == [
        "https://mirror.invalid/simple", "file:///srv/a/simple", "file:///srv/b/simple"]


def test_environment_overrides_config_file(pip_env, monkeypatch):
    pip_env("[global]\nindex-url = https://file.invalid/simple\n"
            "extra-index-url = file:///srv/file/simple\n")
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.invalid/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///srv/x/simple file:///srv/y/simple")
    assert pip_index_urls() == [
        "https://env.invalid/simple", "file:///srv/x/simple", "file:///srv/y/simple"]


def test_command_section_overrides_global(pip_env):
    pip_env("[global]\nindex-url = https://global.invalid/simple\n"
            "[install]\nindex-url = https://install.invalid/simple\n")
    assert pip_index_urls() == ["https://install.invalid/simple"]


def test_without_index_url_pips_own_default_comes_first(pip_env):
    pip_env("[global]\nextra-index-url = file:///srv/a/simple\n")
    assert pip_index_urls() == [pip_default_index(), "file:///srv/a/simple"]


def test_no_config_at_all_gives_pips_default(monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip then reads no config file
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    urls = pip_index_urls()
    assert urls == [pip_default_index()]
    assert urls[0].startswith("https://")


def test_no_index_gives_no_urls_and_a_clear_fetch_error(pip_env, monkeypatch, tmp_path):
    pip_env("[global]\nno-index = true\nextra-index-url = file:///srv/a/simple\n")
    assert pip_index_urls() == []
    with pytest.raises(DeviceDependencyError, match="no-index"):
        fetch(package("0" * 64), cache_dir=tmp_path / "cache")


def test_missing_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    with pytest.raises(DeviceDependencyError, match="cannot run .*pip config list"):
        pip_index_urls(python=sys.executable + "-does-not-exist")


def test_changed_pip_internals_are_a_clear_error(pip_env, monkeypatch):
    monkeypatch.setattr(devicedeps, "_PIP_DEFAULT_INDEX_CODE",
                        "from pip._internal.models.index import NoSuchThing")
    with pytest.raises(DeviceDependencyError, match="internals may have changed.*PIP_INDEX_URL"):
        pip_index_urls()


# --- fetching from a local file:// index -------------------------------------


def test_fetch_extracts_listed_files_into_the_cache(tmp_path, good_index):
    url, sha = good_index
    cache = tmp_path / "cache"
    files = fetch(package(sha), cache_dir=cache, index_urls=[url])
    pkg_dir = cache / "micropython-demo-pkg-1.0.2"
    assert files == {"umqtt/simple.py": pkg_dir / "lib" / "umqtt" / "simple.py"}
    assert files["umqtt/simple.py"].read_bytes() == SIMPLE_PY
    assert (pkg_dir / f"{NAME}-{VERSION}.tar.gz").is_file()
    # only the listed members are extracted
    assert sorted(p.name for p in (pkg_dir / "lib").rglob("*")) == ["simple.py", "umqtt"]


def test_second_fetch_uses_the_cache_offline(tmp_path, good_index):
    url, sha = good_index
    cache = tmp_path / "cache"
    fetch(package(sha), cache_dir=cache, index_urls=[url])
    archive = cache / "micropython-demo-pkg-1.0.2" / f"{NAME}-{VERSION}.tar.gz"
    before = archive.stat().st_mtime_ns
    (tmp_path / "index" / "files" / archive.name).unlink()  # the index is gone
    files = fetch(package(sha), cache_dir=cache, index_urls=["file:///nonexistent/simple"])
    assert files["umqtt/simple.py"].read_bytes() == SIMPLE_PY
    assert archive.stat().st_mtime_ns == before


def test_cached_archive_with_wrong_sha_is_downloaded_again(tmp_path, good_index):
    url, sha = good_index
    cache = tmp_path / "cache"
    fetch(package(sha), cache_dir=cache, index_urls=[url])
    archive = cache / "micropython-demo-pkg-1.0.2" / f"{NAME}-{VERSION}.tar.gz"
    archive.write_bytes(b"tampered")
    files = fetch(package(sha), cache_dir=cache, index_urls=[url])
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == sha
    assert files["umqtt/simple.py"].read_bytes() == SIMPLE_PY


def test_sha_mismatch_with_the_pin(tmp_path, good_index):
    url, _ = good_index
    with pytest.raises(DeviceDependencyError, match="sha256 mismatch") as err:
        fetch(package("0" * 64), cache_dir=tmp_path / "cache", index_urls=[url])
    assert url in str(err.value) and NAME in str(err.value)
    assert err.value.package == f"{NAME}=={VERSION}"
    assert not list((tmp_path / "cache").rglob("*.tar.gz"))


def test_sha_mismatch_without_url_fragment_is_caught_after_download(tmp_path):
    archive = make_sdist({"umqtt/simple.py": SIMPLE_PY})
    url, _ = make_index(tmp_path / "index", archive, fragment=False)
    with pytest.raises(DeviceDependencyError, match="sha256 mismatch.*got"):
        fetch(package("0" * 64), cache_dir=tmp_path / "cache", index_urls=[url])
    assert not list((tmp_path / "cache").rglob("*.tar.gz"))


def test_missing_version_lists_what_the_index_has(tmp_path, good_index):
    url, sha = good_index
    message = r"no \.tar\.gz sdist of version 9\.9 .*listed: 1\.0\.2"
    with pytest.raises(DeviceDependencyError, match=message):
        fetch(package(sha, version="9.9"), cache_dir=tmp_path / "cache", index_urls=[url])


def test_missing_project_names_every_index_tried(tmp_path, good_index):
    url, sha = good_index
    other = (tmp_path / "empty" / "simple").as_uri()
    with pytest.raises(DeviceDependencyError) as err:
        fetch(package(sha, name="not-there"), cache_dir=tmp_path / "cache",
              index_urls=[other, url])
    message = str(err.value)
    assert "no project page not-there/" in message
    assert other in message and url in message
    assert err.value.index_urls == (other, url)


def test_later_index_is_used_when_the_first_lacks_the_package(tmp_path, good_index):
    url, sha = good_index
    first = (tmp_path / "empty" / "simple").as_uri()
    files = fetch(package(sha), cache_dir=tmp_path / "cache", index_urls=[first, url])
    assert files["umqtt/simple.py"].read_bytes() == SIMPLE_PY


def test_wheels_and_other_projects_on_the_page_are_ignored(tmp_path):
    archive = make_sdist({"umqtt/simple.py": SIMPLE_PY})
    url, sha = make_index(tmp_path / "index", archive, other_links=[
        f"{NAME}-{VERSION}-py3-none-any.whl", f"{NAME}-extra-{VERSION}.tar.gz"])
    files = fetch(package(sha), cache_dir=tmp_path / "cache", index_urls=[url])
    assert files["umqtt/simple.py"].read_bytes() == SIMPLE_PY


@pytest.mark.parametrize("evil", ["../evil.py", "/tmp/pgw-devicedeps-evil.py"])
def test_path_traversal_member_is_refused(tmp_path, evil):
    archive = make_sdist({"umqtt/simple.py": SIMPLE_PY, evil: b"boom"})
    url, sha = make_index(tmp_path / "index", archive)
    with pytest.raises(DeviceDependencyError, match="unsafe member"):
        fetch(package(sha), cache_dir=tmp_path / "cache", index_urls=[url])
    assert not (tmp_path / "cache" / "evil.py").exists()
    assert not list((tmp_path / "cache").rglob("simple.py"))


def test_missing_listed_file(tmp_path, good_index):
    url, sha = good_index
    with pytest.raises(DeviceDependencyError, match="'umqtt/robust.py' is not in archive"):
        fetch(package(sha, files=("umqtt/simple.py", "umqtt/robust.py")),
              cache_dir=tmp_path / "cache", index_urls=[url])


def test_unpinned_sha_refuses_and_says_how_to_pin(tmp_path, good_index):
    url, _ = good_index
    with pytest.raises(DeviceDependencyError, match="--sha256"):
        fetch(package(None), cache_dir=tmp_path / "cache", index_urls=[url])


def test_sdist_sha256_for_a_new_pin(good_index):
    url, sha = good_index
    got, source = devicedeps.sdist_sha256(NAME, VERSION, index_urls=[url])
    assert got == sha
    assert source.startswith("file://") and f"{NAME}-{VERSION}.tar.gz" in source


def test_fetch_all_and_command_line(tmp_path, good_index, capsys):
    url, sha = good_index
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[tool.pgw.device-dependencies."{NAME}"]\n'
                         f'version = "{VERSION}"\nfiles = ["umqtt/simple.py"]\n'
                         f'sha256 = "{sha}"\n')
    cache = tmp_path / "cache"
    files = fetch_all(pyproject, cache_dir=cache, index_urls=[url])
    assert list(files) == ["umqtt/simple.py"]
    # cached now, so the command line needs no index at all
    assert devicedeps.main(["--pyproject", str(pyproject), "--cache-dir", str(cache)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{NAME}=={VERSION}  /lib/umqtt/simple.py  <- ")
    assert line.endswith("simple.py")


# --- https: pip's cert setting and credentials in the index URL ---------------


@pytest.fixture
def https_index(tmp_path):
    """The good index served over https on 127.0.0.1 with a self-signed certificate,
    behind basic auth (user "pgw", password "s3cret")."""
    archive = make_sdist({"umqtt/simple.py": SIMPLE_PY})
    make_index(tmp_path / "www", archive)
    sha = hashlib.sha256(archive).hexdigest()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    expected = "Basic " + base64.b64encode(b"pgw:s3cret").decode()

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("Authorization") != expected:
                self.send_error(401)
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 partial(Handler, directory=str(tmp_path / "www")))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://pgw:s3cret@127.0.0.1:{server.server_address[1]}/simple", sha, cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_https_index_honours_pip_cert_and_url_credentials(tmp_path, https_index, monkeypatch):
    url, sha, cert = https_index
    monkeypatch.setenv("PIP_CERT", str(cert))
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "20")
    files = fetch(package(sha), cache_dir=tmp_path / "cache", index_urls=[url])
    assert files["umqtt/simple.py"].read_bytes() == SIMPLE_PY


def test_https_index_without_its_cert_fails_and_hides_the_password(
        tmp_path, https_index, monkeypatch):
    url, sha, _ = https_index
    monkeypatch.setenv("PIP_CERT", "")  # system trust only
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "20")
    with pytest.raises(DeviceDependencyError, match="CERTIFICATE_VERIFY_FAILED") as err:
        fetch(package(sha), cache_dir=tmp_path / "cache", index_urls=[url])
    assert "s3cret" not in str(err.value) and "***@127.0.0.1" in str(err.value)


# --- the real package, through the index pip is configured with -------------


def test_real_umqtt_simple_through_pips_index(tmp_path):
    (pin,) = [p for p in load_pins() if p.name == "micropython-umqtt.simple"]
    files = fetch(pin, cache_dir=tmp_path / "cache")
    source = files["umqtt/simple.py"].read_text()
    assert "class MQTTClient" in source
    assert "def publish" in source and "def subscribe" in source
    assert files["umqtt/simple.py"] == (
        tmp_path / "cache" / "micropython-umqtt-simple-1.3.4" / "lib" / "umqtt" / "simple.py")
