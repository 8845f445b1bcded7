"""TLS to etcd: the ``ca_cert``, ``cert_key`` and ``cert_cert`` options, checked when the store is
opened, and what a failed TLS connection says to check.

gRPC reads the files only when it connects, and reports a file it cannot use, a CA that did not sign
the server's certificate, or a server that does not serve TLS, as a connection failure like any
other; so the files are parsed here first (:mod:`ssl`, the same PEM formats), and a connection
failure whose details are those of a TLS handshake names the options (:func:`tls_failure`).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import grpc

from dal.backends.url import StoreURL
from dal.exceptions import ConfigurationError

TLS_OPTIONS = ("ca_cert", "cert_key", "cert_cert")
#: what gRPC's details of a failed connection hold when its TLS handshake failed (or could not start)
HANDSHAKE = ("handshake", "ssl", "tls", "tsi_", "certificate", "security")


def tls_credentials(url: StoreURL) -> Any:
    """Return gRPC channel credentials when any TLS option is given, else ``None``.

    Raises ConfigurationError for a file that cannot be read or is not what its option takes: a
    certificate in PEM (``ca_cert``, ``cert_cert``), the unencrypted PEM private key of that
    certificate (``cert_key``).
    """
    paths = {name: url.options.get(name) for name in TLS_OPTIONS}
    if not any(paths.values()):
        return None
    if bool(paths["cert_key"]) != bool(paths["cert_cert"]):
        raise ConfigurationError(f"{url} gives only one of cert_key and cert_cert; a client "
                                 "certificate needs both")
    contents: dict[str, bytes | None] = {}
    for name, path in paths.items():
        if not path:
            contents[name] = None
            continue
        try:
            contents[name] = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"option {name} of {url}: cannot read {path!r}: {exc.strerror}") from exc
    _check_pem(url, paths, contents)
    # without ca_cert, the server's certificate is checked against the system's trusted roots
    return grpc.ssl_channel_credentials(contents["ca_cert"], contents["cert_key"], contents["cert_cert"])


def _check_pem(url: StoreURL, paths: dict[str, str | None], contents: dict[str, bytes | None]) -> None:
    """Raise ConfigurationError unless the TLS files hold what gRPC takes (it would fail each
    connection with "Failed to create security handshaker", naming no file)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # OpenSSL's security level 0: whether a key is strong enough is the members' to decide, as gRPC
    # leaves it (level 2, Python's default, refuses a 1024-bit RSA key that gRPC and etcd take)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    for name, what in (("ca_cert", "the CA certificate that signed the etcd members' certificates"),
                       ("cert_cert", "the client certificate (cert_key takes its private key)")):
        data = contents[name]
        if data is None:
            continue
        try:
            # the PEM text only: anything around the blocks (openssl's -text output) is skipped
            context.load_verify_locations(cadata=data.decode("ascii", "ignore"))
        except (ssl.SSLError, ValueError):
            raise ConfigurationError(f"option {name} of {url}: {paths[name]!r} holds no certificate in PEM "
                                     f"(-----BEGIN CERTIFICATE-----); name the file of {what}") from None
    key, cert = paths["cert_key"], paths["cert_cert"]
    if key is None or cert is None:
        return
    if b"ENCRYPTED" in (contents["cert_key"] or b""):
        raise ConfigurationError(f"option cert_key of {url}: {key!r} is an encrypted private key, which "
                                 "gRPC cannot use; decrypt it (openssl pkey -in KEY -out PLAIN.key)")
    try:
        # an empty password: OpenSSL would otherwise prompt for one on the terminal
        context.load_cert_chain(cert, key, password=b"")
    except (ssl.SSLError, OSError) as exc:
        said = str(exc)
        if "KEY_VALUES_MISMATCH" in said:
            wrong = "is not the private key of the certificate in cert_cert"
        elif "PEM" in said or "NO_START_LINE" in said or not isinstance(exc, ssl.SSLError):
            wrong = "holds no private key in PEM (-----BEGIN PRIVATE KEY-----)"
        else:  # a key OpenSSL reads but will not use: say what it said
            wrong = f"cannot be used with the certificate in cert_cert ({said})"
        raise ConfigurationError(f"option cert_key of {url}: {key!r} {wrong}; name the file of the "
                                 f"private key of the client certificate {cert!r}") from None


def tls_failure(where: str, details: str, tls: bool, url: StoreURL) -> str | None:
    """Return the message of a failed connection whose gRPC ``details`` may come from TLS, ``tls``
    saying whether the URL gives TLS options; ``None`` when nothing points at TLS."""
    lowered = details.lower()
    if tls and any(word in lowered for word in (*HANDSHAKE, "socket closed")):
        return (f"could not connect to etcd at {where} over TLS ({details}); check that its members are "
                "running and serve TLS (--cert-file, https:// in --listen-client-urls; for members that do "
                f"not, give no TLS options), and the TLS options of {url}: ca_cert must be the CA "
                "certificate that signed the members' certificates (issued for the host names this URL "
                "gives), cert_key and cert_cert a client key and certificate that CA signed (members "
                "started with --client-cert-auth ask for one)")
    if not tls and "socket closed" in lowered:
        return (f"could not reach etcd at {where} ({details}); check that its members are running and "
                "that this host can connect to them; members serving TLS (--cert-file, https:// in "
                "--listen-client-urls) close the connection of a client without TLS options: for those, "
                f"give {url} the ca_cert option (and cert_key and cert_cert when they ask for a client "
                "certificate)")
    return None
