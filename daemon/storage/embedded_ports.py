"""The embedded store's ports: every one on 127.0.0.1, the internal ones picked free once
and remembered in the data folder (the master keeps its metadata in a folder named after
its port, so stable ports keep its state across restarts)."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

from daemon.errors import StorageError

HOST = "127.0.0.1"
PORTS_FILE = "lipsyncd-ports.json"
# the services weed mini runs besides the S3 gateway, each on an HTTP and a gRPC port
INTERNAL_SERVICES = ("master", "volume", "filer", "admin")
# SeaweedFS assumes gRPC = HTTP + 10000 wherever an address is passed without its gRPC port
# (its maintenance worker dials the admin server that way), so we keep to that convention
GRPC_OFFSET = 10000
# HTTP ports are drawn below the usual ephemeral range (32768+), gRPC ports land 10000 up
_PORT_RANGE = (20000, 32768)


def choose_ports(data_dir: Path, s3_port: int) -> dict[str, int]:
    """The internal ports of the weed on ``data_dir``: last run's when still free, fresh free
    ones otherwise (remembered in the data folder)."""
    path = data_dir / PORTS_FILE
    try:
        saved = {k: int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        saved = {}
    ports: dict[str, int] = {}
    for service in INTERNAL_SERVICES:
        http = saved.get(f"{service}.port")
        taken = set(ports.values()) | {s3_port}
        if not (http and {http, http + GRPC_OFFSET}.isdisjoint(taken)
                and port_free(http) and port_free(http + GRPC_OFFSET)):
            http = free_port_pair(taken)
        ports[f"{service}.port"] = http
        ports[f"{service}.port.grpc"] = http + GRPC_OFFSET
    if s3_port + GRPC_OFFSET <= 65535 and port_free(s3_port + GRPC_OFFSET) \
            and s3_port + GRPC_OFFSET not in ports.values():
        ports["s3.port.grpc"] = s3_port + GRPC_OFFSET
    else:  # nothing derives the S3 gateway's gRPC port from its HTTP port
        ports["s3.port.grpc"] = free_port_pair(set(ports.values()) | {s3_port}, pair=False)
    if ports != saved:
        path.write_text(json.dumps(ports, indent=2) + "\n")
    return ports


def port_free(port: int) -> bool:
    if not 0 < port <= 65535:
        return False
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # as the server will: TIME_WAIT leftovers of an earlier run must not count as "in use"
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port_pair(taken: set[int], *, pair: bool = True) -> int:
    """A free port p (and p + GRPC_OFFSET free too, when ``pair``) not in ``taken``."""
    for _ in range(500):
        p = random.randrange(*_PORT_RANGE)
        wanted = {p, p + GRPC_OFFSET} if pair else {p}
        if wanted.isdisjoint(taken) and all(port_free(q) for q in wanted):
            return p
    raise StorageError(f"no free ports for SeaweedFS between {_PORT_RANGE[0]} and {_PORT_RANGE[1]} on {HOST}",
                       code="storage_setup")
