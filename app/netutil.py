"""Network helpers shared by the servers segcam runs (ZeroMQ publisher, web preview)."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """True when ``host`` (a name or IP literal, brackets allowed) is this machine only.

    Anything that is not ``localhost`` or a loopback address — ``0.0.0.0``, ``*``, an
    interface name, a LAN address — counts as exposed to the network.
    """
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
