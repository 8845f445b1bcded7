"""A loopback TCP proxy that can lose a server's answer, partition and cut connections, for fault tests.

Put a :class:`LoopbackProxy` in front of a server and point the client at the proxy. It
forwards bytes both ways until a test arms a fault:

* :meth:`~LoopbackProxy.drop_next_answer` lets the next request through and throws the
  answer away, then drops the client (``"close"``) or keeps it waiting in silence
  (``"hold"``), so the server applied a request whose client cannot tell;
* :meth:`~LoopbackProxy.blackhole` stops all traffic (a partition) until turned off;
* :meth:`~LoopbackProxy.lose` throws all traffic away until turned off (a lossy network);
* :meth:`~LoopbackProxy.cut` resets every current connection.

One thread runs a selector loop over every socket, so faults take effect between two
reads, never in the middle of one; the control methods hand their work to that thread and
return once it is done.

:mod:`~dal.testing.proxy.control` is the proxy a test holds, :mod:`~dal.testing.proxy.loop`
its thread, :mod:`~dal.testing.proxy.connection` what it holds per connection.
"""

from dal.testing.proxy.connection import CHUNK, LOOPBACK, MODES, DropHandle
from dal.testing.proxy.control import LoopbackProxy

__all__ = ["CHUNK", "LOOPBACK", "MODES", "DropHandle", "LoopbackProxy"]
