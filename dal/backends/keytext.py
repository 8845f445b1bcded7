"""A key another client wrote that is not UTF-8 text (dal writes text keys only), as a message shows it.

The durable stores read their keys as text; one that does not decode stops a scan, and its error names
the key as bash's ``$'...'`` reads it, so the command that deletes it can be pasted as it is.
"""

from __future__ import annotations

from collections.abc import Iterable


def first_undecodable(keys: Iterable[bytes]) -> bytes:
    """Return the first of ``keys`` that is not UTF-8 text (the caller saw one fail to decode)."""
    return next(key for key in keys if not _decodes(key))


def bash_quoted(key: bytes) -> str:
    """Return ``key`` as bash's ``$'...'`` quoting writes it: printable ASCII as it is, every other
    byte (a quote and a backslash too) as ``\\xNN``."""
    shown = "".join(chr(byte) if 0x20 <= byte < 0x7F and byte not in b"\\'" else f"\\x{byte:02x}"
                    for byte in key)
    return f"$'{shown}'"


def _decodes(key: bytes) -> bool:
    try:
        key.decode()
    except UnicodeDecodeError:
        return False
    return True
