"""Joining a Ray cluster ends in one line, within seconds, whatever goes wrong (search.cluster),
and a search on a cluster of two nodes runs trials on both."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import pandas as pd
import pytest
from cli import ROOT, command, free_port, run, tiny_space, wait_for_port
from conftest import make_tree

from search.cluster import ClusterError, parse_address


@pytest.mark.parametrize("address", ["not-a-host", "host:", "host:port", "host:70000", ":6379", "host:\u00b2"])
def test_an_address_that_is_not_auto_or_host_port_is_named(address):
    with pytest.raises(ClusterError, match=f"--address {address}: expected 'auto' or HOST:PORT"):
        parse_address(address)
    assert parse_address("auto") is None and parse_address("10.0.0.5:6379") == ("10.0.0.5", 6379)


@pytest.mark.parametrize("host", ["a..b", "x" * 64 + ".example"])
def test_a_host_no_resolver_takes_is_one_line(host):
    from search.cluster import check_address

    with pytest.raises(ClusterError, match=re.escape(f"--address {host}:6379: {host!r} is not a host name")):
        check_address(f"{host}:6379")


def connect_in_a_process(address: str, timeout_s: float, env=None) -> subprocess.CompletedProcess:
    """search.cluster.connect as the CLIs call it, in its own process: on a timeout it exits."""
    code = ("import sys; from search.cluster import ClusterError, connect\n"
            f"try: connect({address!r}, timeout_s={timeout_s})\n"
            "except ClusterError as e: print(f'error: {e}', file=sys.stderr); sys.exit(2)")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.mark.slow
def test_an_address_that_answers_but_not_as_ray_ends_in_one_line():
    with socket.socket() as listener:  # accepts connections, says nothing
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        proc = connect_in_a_process(address, timeout_s=3)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: --address {address}: no Ray cluster answered within 3 s; check that it is the head node's GCS "
        "port and, for a cluster with token authentication, RAY_AUTH_MODE=token and the cluster's RAY_AUTH_TOKEN "
        "(docs/clusters.md)"]


@pytest.fixture
def ray_tmp():
    """A temp folder for a Ray started by a test, short: Ray's socket paths must fit 107 bytes."""
    path = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_a_cluster_that_refuses_the_token_ends_in_one_line_naming_the_settings(ray_tmp):
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "a" * 32}
    # `ray start` as the `ray` script runs it, found without the venv on PATH
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
                             "--num-cpus=1", "--include-dashboard=false", "--block", f"--temp-dir={ray_tmp}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port)
        proc = connect_in_a_process(f"127.0.0.1:{port}", timeout_s=5, env={**env, "RAY_AUTH_TOKEN": "b" * 32})
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --address 127.0.0.1:{port}: the cluster refused this driver's authentication token; "
        "set RAY_AUTH_MODE=token and the cluster's RAY_AUTH_TOKEN (docs/clusters.md)")


@pytest.mark.slow
def test_a_process_keeps_the_cluster_it_joined_and_refuses_an_address_then(ray_session):
    import ray

    from search.cluster import connect

    connect(None)
    before = ray.get_runtime_context().get_job_id()
    connect(None)  # as `main` does when called again in a notebook
    assert ray.get_runtime_context().get_job_id() == before
    with socket.socket() as listener:  # an address that answers: only the joined cluster is in the way
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ClusterError, match=f"--address {address}: this process has already joined a Ray cluster"):
            connect(address)


@pytest.mark.slow
def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path, monkeypatch, ray_tmp):
    from ray.cluster_utils import Cluster

    # A Cluster tells every plain ray.init() on this machine to join it (an address file in Ray's
    # temp folder): that file goes to a folder of its own, so no other test's command joins it.
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        # Trials long enough (8 epochs) that the second starts while the first runs, also on a loaded
        # machine: with shorter ones a reused actor took all four on one node once in six CI runs.
        space = tiny_space(tmp_path, num_samples=4, max_concurrent=2,
                           asha={"max_t": 8, "grace_period": 8, "reduction_factor": 2})
        proc = run(command(space, make_tree(tmp_path / "tree", per_class=8), tmp_path / "runs", "--address",
                           cluster.address))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        df = pd.read_parquet(tmp_path / "runs" / "t" / "trials.parquet")
        assert len(df) == 4 and set(df["status"]) == {"TERMINATED"}
        assert set(df["node_id"]) == {cluster.head_node.node_id, worker.node_id}
    finally:
        cluster.shutdown()
