"""The helpers that user code imports from ``ipyparallel.util``: ``interactive``, and the
URL functions that turn a connection file's wildcard addresses into ones to connect to
(ipyparallel's inter-engine examples use ``disambiguate_url``), so such code runs with
``ipyparallel`` replaced by ``corral``. ipyparallel's internal helpers are not here; the
client's connection code uses the address helpers too.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from corral.dependency import interactive

__all__ = [
    "disambiguate_ip_address",
    "disambiguate_url",
    "int_keys",
    "interactive",
    "is_ip",
    "is_loopback",
    "is_this_machine",
    "is_url",
    "select_random_ports",
    "split_url",
    "validate_url",
]

#: Addresses that mean "every interface": they can be bound to, not connected to.
WILDCARDS = frozenset({"0.0.0.0", "*", "::", ""})
#: Where a wildcard on this machine is reached.
LOCALHOST = "127.0.0.1"


def is_url(url) -> bool:
    """Whether ``url`` looks like a ZeroMQ URL (``transport://address``)."""
    return isinstance(url, str) and "://" in url and bool(url.split("://", 1)[1])


def split_url(url: str) -> tuple[str, str, str]:
    """``"tcp://host:port"`` as ``("tcp", "host", "port")``; ``ValueError`` for other
    shapes."""
    if not is_url(url):
        raise ValueError(f"not a URL: {url!r}")
    transport, rest = url.split("://", 1)
    host, sep, port = rest.rpartition(":")
    if not sep:
        raise ValueError(f"no port in {url!r}")
    return transport, host.strip("[]"), port


def validate_url(url: str) -> bool:
    """``True`` for a well-formed ZeroMQ URL; ``ValueError`` saying what is wrong
    otherwise. Only tcp URLs are checked beyond their shape."""
    if not is_url(url):
        raise ValueError(f"not a URL: {url!r}")
    transport = url.split("://", 1)[0]
    if transport != "tcp":
        return True
    _, host, port = split_url(url)
    if port != "*":
        try:
            number = int(port)
        except ValueError:
            raise ValueError(f"invalid port {port!r} in {url!r}") from None
        if not 0 < number < 65536:
            raise ValueError(f"port {number} out of range in {url!r}")
    if not host:
        raise ValueError(f"no host in {url!r}")
    return True


def is_ip(location: str) -> bool:
    """Whether ``location`` is an IP address (not a host name)."""
    try:
        ipaddress.ip_address(location)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address."""
    return host == "localhost" or (is_ip(host) and ipaddress.ip_address(host).is_loopback)


def is_this_machine(location: str | None) -> bool:
    """Whether ``location`` (a host name or address; absent means here) names this machine:
    a loopback address, this host's name, or a name that resolves to one of its addresses."""
    if not location or is_loopback(location):
        return True
    if location in {socket.gethostname(), socket.getfqdn()}:
        return True
    try:
        ours = set(socket.gethostbyname_ex(socket.gethostname())[2])
        return socket.gethostbyname(location) in ours
    except OSError:
        return False


def disambiguate_ip_address(ip: str, location: str | None = None) -> str:
    """A connectable address for ``ip``: a wildcard (``0.0.0.0``, ``*``) becomes
    ``location`` when that is another machine, else this machine's loopback address.
    Other addresses come back unchanged."""
    if ip not in WILDCARDS:
        return ip
    if location and location not in WILDCARDS and not is_this_machine(location):
        return location
    return LOCALHOST


def disambiguate_url(url: str, location: str | None = None) -> str:
    """``url`` with a wildcard host made connectable (see ``disambiguate_ip_address``):
    ``"tcp://*:5555"`` becomes ``"tcp://127.0.0.1:5555"``. Non-tcp URLs come back
    unchanged."""
    if not is_url(url) or urlsplit(url).scheme != "tcp":
        return url
    transport, host, port = split_url(url)
    host = disambiguate_ip_address(host, location)
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{transport}://{host}:{port}"


def select_random_ports(n: int) -> list[int]:
    """``n`` distinct ports free on this machine now (each briefly bound on the loopback
    interface, all at once so that they differ)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def int_keys(d: dict) -> dict:
    """``d`` with its string keys that spell integers made ints, in place (JSON turns
    int keys into strings); ``KeyError`` if that would merge two keys."""
    for key in list(d):
        if isinstance(key, str):
            try:
                number = int(key)
            except ValueError:
                continue
            if number in d:
                raise KeyError(f"both {key!r} and {number!r} are keys")
            d[number] = d.pop(key)
    return d
