"""The bundled sample model: a small storage platform, in the spirit of Open vStorage's.

Importing this package registers its hybrids; ``dal`` commands discover it by default.
"""

from dal.hybrids.backend import Backend
from dal.hybrids.backendtype import BackendType

__all__ = ["Backend", "BackendType"]
