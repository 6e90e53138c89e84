"""Joining the Ray cluster (or starting a local one) and checking that it can run a trial.

Ray's own connect retries for many minutes against an address that does not answer, and prints
a traceback for one it cannot parse. Here every failure ends within about half a minute in one
`ClusterError` line naming --address, what failed and what to check.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

from cvae_core.cli import HeldStderr, first_line

CONNECT_TIMEOUT_S = 20  # Ray itself retries for minutes; a refused token for ~20 s
PROBE_TIMEOUT_S = 3
TOKEN_SETTINGS = "RAY_AUTH_MODE=token and the cluster's RAY_AUTH_TOKEN (docs/clusters.md)"


class ClusterError(RuntimeError):
    """The cluster cannot be joined, or cannot hold a trial."""


def parse_address(address: str | None) -> tuple[str, int] | None:
    """(host, port) of HOST:PORT; None for a local cluster (no address) or 'auto'."""
    if address is None or address == "auto":
        return None
    host, _, port = address.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:  # '²' is a digit
        raise ClusterError(f"--address {address}: expected 'auto' or HOST:PORT (the head node's `ray start --port`)")
    return host, int(port)


def check_address(address: str | None) -> None:
    """--address, checked before any work (the data loaded, a run folder made): its form, and that
    the head node answers within PROBE_TIMEOUT_S. Raises ClusterError in one line."""
    if (hostport := parse_address(address)) is not None:
        _probe(address, *hostport)


def _probe(address: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except socket.gaierror:
        raise ClusterError(f"--address {address}: unknown host {host!r}; check the head node's name or IP") from None
    except UnicodeError:  # the resolver's IDNA encoding: an empty or over-long label
        raise ClusterError(f"--address {address}: {host!r} is not a host name; check the head node's name or IP") \
            from None
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise ClusterError(f"--address {address}: cannot reach {host}:{port} ({why}); check that the head node "
                           f"runs `ray start --head --port={port}` and that this machine can reach it") from None


def _diagnosis(address: str, printed: str, fallback: str) -> str:
    if "InvalidAuthToken" in printed or "Unauthenticated" in printed:
        return f"--address {address}: the cluster refused this driver's authentication token; set {TOKEN_SETTINGS}"
    if "Could not find any running Ray instance" in fallback:
        return (f"--address {address}: no running Ray cluster found from this machine; "
                "start one (`ray start --head`) or give HOST:PORT")
    return fallback


def connect(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """ray.init: a local cluster without an address, else join `address` or raise ClusterError.
    A process already joined to a cluster (a notebook or a test session calling `main`) keeps it."""
    # Ray's log deduplication holds back a worker's line that looks like another worker's (numbers
    # aside) and prints it later with "[repeated Nx across cluster]": finalists' progress lines came
    # out of order and mangled. It is read once, when Ray is imported (here, in the commands), and a
    # user's own RAY_DEDUP_LOGS wins.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    hostport = parse_address(address)
    if hostport is not None:
        _probe(address, *hostport)
    if ray.is_initialized():
        if address is not None:
            raise ClusterError(f"--address {address}: this process has already joined a Ray cluster; "
                               "leave --address out to use that one")
        return
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=True)
        return
    held = HeldStderr()

    def give_up():
        line = _diagnosis(address, held.release(), f"--address {address}: no Ray cluster answered within "
                          f"{timeout_s:g} s; check that it is the head node's GCS port and, for a cluster with "
                          f"token authentication, {TOKEN_SETTINGS}")
        print(f"error: {line}", file=sys.stderr, flush=True)
        os._exit(2)  # ray.init cannot be interrupted; nothing has been written yet

    timer = threading.Timer(timeout_s, give_up)
    timer.daemon = True
    timer.start()
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    except Exception as e:  # ConnectionError, a version mismatch, ...: one line, not a traceback
        timer.cancel()
        fallback = f"--address {address}: cannot join the cluster ({first_line(e)})"
        raise ClusterError(_diagnosis(address, held.release(), fallback)) from None
    timer.cancel()
    sys.stderr.write(held.release())  # what joining printed, as Ray would have shown it


def one_node() -> bool:
    """Whether every task of this cluster runs on this machine (so this machine's caches are theirs)."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive")) == 1


def check_capacity(cpu: float, gpu: float, where: str) -> None:
    """Refuse a trial that no node of the cluster could ever hold: Tune would wait for it forever."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpu and r.get("GPU", 0) >= gpu for r in nodes):
        return
    have = ", ".join(sorted({f"{r.get('CPU', 0):g} CPU + {r.get('GPU', 0):g} GPU" for r in nodes})) or "none"
    raise ClusterError(f"{where}: a trial needs {cpu:g} CPU + {gpu:g} GPU and no node of the Ray cluster has that "
                       f"much (nodes: {have}); lower it or add a larger node")
