"""The bundled sample model: a small storage platform, in the spirit of Open vStorage's, and the
virtual machines of a cluster, mirrored from its remote API as Ganeti Web Manager mirrored them.

Importing this package registers its hybrids; ``dal`` commands discover it by default.
"""

from dal.hybrids.albabackend import AlbaBackend
from dal.hybrids.backend import Backend
from dal.hybrids.backendstoragerouter import BackendStorageRouter
from dal.hybrids.backendtype import BackendType
from dal.hybrids.cluster import Cluster
from dal.hybrids.disk import Disk
from dal.hybrids.pool import Pool
from dal.hybrids.storagerouter import StorageRouter
from dal.hybrids.virtualmachine import VirtualMachine

__all__ = ["AlbaBackend", "Backend", "BackendStorageRouter", "BackendType", "Cluster", "Disk", "Pool",
           "StorageRouter", "VirtualMachine"]
