"""etcd over TLS, and what each misconfiguration says: a file that is no PEM of what its option
takes is a ConfigurationError when the store is opened; a failed TLS handshake names the TLS options
and whether the server serves TLS, not only "could not reach"."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from etcd_flags import start_etcd_with
from tls_pki import PKI, make_pki

from dal.backends import open_persistent
from dal.exceptions import BackendError, ConfigurationError
from dal.testing.servers import RunningServer, closed_port

pytestmark = pytest.mark.etcd


def _tls(pki: PKI, *, ca: Path | None = None, key: Path | None = None, cert: Path | None = None) -> str:
    options = {"ca_cert": ca or pki.ca, "cert_key": key or pki.client_key,
               "cert_cert": cert or pki.client_cert}
    return "&".join(f"{name}={path}" for name, path in options.items())


def _answers(url: str) -> bool:
    store = open_persistent(url)
    try:
        store.get("dal-readiness-probe")
    except BackendError:
        return False
    finally:
        store.close()
    return True


@dataclass
class Servers:
    pki: PKI
    tls: RunningServer  # asks for client certificates
    plain: RunningServer


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    pki = make_pki(tmp_path / "pki")
    tls = start_etcd_with(
        tmp_path / "tls", "--cert-file", str(pki.server_cert), "--key-file", str(pki.server_key),
        "--client-cert-auth", "--trusted-ca-file", str(pki.ca), scheme="https",
        ready=lambda host, port: _answers(f"etcd://{host}:{port}?timeout=1&{_tls(pki)}"))
    try:
        plain = start_etcd_with(tmp_path / "plain")
        try:
            yield Servers(pki, tls, plain)
        finally:
            plain.stop()
    finally:
        tls.stop()


def test_files_that_are_not_the_pem_their_option_takes_are_refused_when_the_store_is_opened(
        tmp_path: Path) -> None:
    pki, port = make_pki(tmp_path / "pki"), closed_port()  # nothing connects
    garbage, encrypted = tmp_path / "garbage.pem", tmp_path / "encrypted.key"
    garbage.write_text("garbage\n")
    subprocess.run(["openssl", "pkey", "-in", str(pki.client_key), "-aes256", "-passout", "pass:pw",
                    "-out", str(encrypted)], check=True)
    for options, complaint in [
            (_tls(pki, ca=garbage), "option ca_cert .* holds no certificate in PEM"),
            (_tls(pki, key=garbage), "option cert_key .* holds no private key in PEM"),
            (_tls(pki, key=pki.client_cert, cert=pki.client_key), "option cert_cert .* holds no certificate"),
            (_tls(pki, key=pki.server_key), "option cert_key .* is not the private key of the certificate"),
            (_tls(pki, key=encrypted), "option cert_key .* is an encrypted private key, which gRPC cannot")]:
        with pytest.raises(ConfigurationError, match=complaint):
            open_persistent(f"etcd://127.0.0.1:{port}?{options}")


def test_a_small_rsa_client_key_that_grpc_takes_is_not_refused(tmp_path: Path) -> None:
    """Python's default OpenSSL security level refuses a 1024-bit RSA key, which gRPC and etcd take:
    whether a key is strong enough is the members' to say, not the option check's."""
    pki, port = make_pki(tmp_path / "pki"), closed_port()
    key, request, cert = (tmp_path / f"rsa1024{suffix}" for suffix in (".key", ".csr", ".pem"))
    subprocess.run(["openssl", "req", "-newkey", "rsa:1024", "-nodes", "-keyout", str(key), "-out",
                    str(request), "-subj", "/CN=small"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(request), "-CA", str(pki.ca), "-CAkey",
                    str(pki.ca.with_suffix(".key")), "-CAcreateserial", "-out", str(cert), "-days", "2"],
                   check=True, capture_output=True)
    store = open_persistent(f"etcd://127.0.0.1:{port}?{_tls(pki, key=key, cert=cert)}")  # connects later
    store.close()


def test_a_failed_tls_handshake_names_the_tls_options_and_whether_the_server_serves_tls(
        servers: Servers) -> None:
    pki, tls, plain = servers.pki, servers.tls.port, servers.plain.port
    assert open_persistent(f"etcd://127.0.0.1:{tls}?{_tls(pki)}").get("k") is None
    for url in (f"etcd://127.0.0.1:{tls}?{_tls(pki, ca=pki.other_ca)}",  # a CA that did not sign it
                f"etcd://127.0.0.1:{tls}?ca_cert={pki.ca}",  # no client certificate
                f"etcd://127.0.0.1:{plain}?{_tls(pki)}"):  # TLS to a server without it
        with pytest.raises(BackendError, match=r"could not connect to etcd at .* over TLS") as raised:
            open_persistent(f"{url}&timeout=2").get("k")
        message = str(raised.value)
        assert "check that its members are running and serve TLS" in message
        assert "ca_cert must be the CA certificate that signed the members' certificates" in message
        assert "--client-cert-auth" in message
    with pytest.raises(BackendError, match=r"close the connection of a client without TLS options: for "
                                           r"those, give .* the ca_cert option"):
        open_persistent(f"etcd://127.0.0.1:{tls}?timeout=2").get("k")
