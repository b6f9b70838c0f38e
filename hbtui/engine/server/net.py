"""Endpoints and their security: which binds are exposed, CURVE allow-lists, binding."""

from __future__ import annotations

import ipaddress
import re

import zmq


class UsageError(Exception):
    """A start-up problem reported as one line with exit code 2."""


def is_loopback(endpoint: str) -> bool:
    """True for ipc/inproc and tcp endpoints bound to a loopback address."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    m = re.match(r"^tcp://(.+):(\d+|\*)$", endpoint)
    if not m:
        return False
    host = m.group(1).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', interface names, host names: treat as exposed


class AllowList:
    """ZAP credentials callback: only listed client public keys may connect."""

    def __init__(self, keys: set[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def bind(sock: zmq.Socket, endpoint: str, what: str) -> None:
    """Bind or raise ``UsageError`` naming the option (port in use, bad endpoint)."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise UsageError(f"cannot bind {what} {endpoint}: {e.strerror}") from None
