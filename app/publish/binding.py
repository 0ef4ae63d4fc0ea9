"""Binding a ZeroMQ socket to the addresses a config names, with one clear error."""

from __future__ import annotations

from typing import List, Sequence

import zmq

from segcam.errors import PublishError


def bind_all(sock: zmq.Socket, addresses: Sequence[str], what: str, hint: str) -> List[str]:
    """Bind ``sock`` to every address; the endpoints actually bound (port 0 resolved).

    A refused address raises :class:`PublishError` naming ``what`` and the address, with
    ``hint`` saying what to do.
    """
    endpoints: List[str] = []
    for address in addresses:
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            raise PublishError(f"cannot bind {what} to {address}: {exc}", hint) from None
        endpoints.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    return endpoints
