"""The values every store must carry unchanged, shared by both contracts."""

#: values every store must carry unchanged: empty, non-UTF-8, NUL bytes, JSON
ODD_VALUES = (b"", b"\xff\xfe\x00\x80binary\x00", bytes(range(256)), b'{"a": [1, 2.5, null]}')
MEGABYTE = 1024 * 1024
