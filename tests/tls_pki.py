"""Certificates for TLS tests, made with the openssl command: a CA, a server certificate for
127.0.0.1 and a client certificate it signed, and a second CA that signed neither."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from dal.testing.fixtures import services_required


@dataclass(frozen=True)
class PKI:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


#: a P-256 key, unencrypted: quicker to make than RSA, and what etcd and gRPC take alike
NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", *NEW_KEY, "-keyout", key, "-out", cert, "-days", "2",
             "-subj", f"/CN={name}")
    return cert, key


def _signed(folder: Path, name: str, ca: tuple[Path, Path], usage: str) -> tuple[Path, Path]:
    cert, key, request, ext = (folder / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr", ".ext"))
    ext.write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
    _openssl("req", *NEW_KEY, "-keyout", key, "-out", request, "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert,
             "-days", "2", "-extfile", ext)
    return cert, key


def make_pki(folder: Path) -> PKI:
    """Write a CA, a server and a client certificate it signed, and another CA into ``folder``
    (without the openssl command the test is skipped, or fails when services are required)."""
    if shutil.which("openssl") is None:
        if services_required():
            pytest.fail("the openssl command is required (DAL_REQUIRE_SERVICES=1): make services installs it")
        pytest.skip("the openssl command is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca(folder, "ca")
    server = _signed(folder, "server", ca, "serverAuth")
    client = _signed(folder, "client", ca, "clientAuth")
    other, _ = _ca(folder, "other")
    return PKI(ca[0], *server, *client, other)
