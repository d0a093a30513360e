"""Helpers for tests that start real processes: Ray nodes (`ray start`), jobs, a local S3 server.

Everything binds 127.0.0.1 on free ports (never Ray's fixed defaults, so other Rays on the machine
cannot collide) and runs in its own process group, stopped by the test that started it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from crnn.runtime import free_port, free_ports  # noqa: F401  (one implementation, re-exported)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
S3_KEY = "crnn-test-key"  # moto accepts any credentials
S3_REGION = "us-east-1"




def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0", **extra)
    env.pop("RAY_API_SERVER_ADDRESS", None)  # it overrides the CLI's --address
    return env


# `ray start` records its address in /tmp/ray/ray_current_cluster and only `ray stop` removes it; a
# terminated `ray start --block` leaves it behind, and Ray Train's placement-group cleaner in every
# later local Ray then tries that dead address. Heads started here restore the file as they found it.
RAY_ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")
_address_file_before: dict[int, bytes | None] = {}


def read_address_file() -> bytes | None:
    """The recorded `ray start` address, or None when there is none."""
    return RAY_ADDRESS_FILE.read_bytes() if RAY_ADDRESS_FILE.exists() else None


def restore_address_file(before: bytes | None) -> None:
    """Put the address file back as ``read_address_file`` found it (absent when it was)."""
    if before is None:
        RAY_ADDRESS_FILE.unlink(missing_ok=True)
    else:
        RAY_ADDRESS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RAY_ADDRESS_FILE.write_bytes(before)


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Terminate a process started with ``start_new_session=True``, then its group if it lingers."""
    if proc.poll() is None:
        proc.terminate()  # `ray start --block` stops the Ray processes it started
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of this group only
    except ProcessLookupError:
        pass
    proc.wait(10)
    if proc.pid in _address_file_before:
        restore_address_file(_address_file_before.pop(proc.pid))


# ----------------------------------------------------------------------------- S3 (moto server)
class S3Server:
    """``moto_server`` on 127.0.0.1: a real S3 HTTP endpoint, no cloud, no credentials."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([f"{BIN}/moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=open(Path(log_dir) / "moto.log", "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("moto_server exited:\n" + (Path(log_dir) / "moto.log").read_text())
                time.sleep(0.3)
        else:
            stop(self.proc)
            raise RuntimeError("moto_server did not come up")

    @property
    def env(self) -> dict[str, str]:
        """What every process (driver, Ray nodes, workers) needs to reach it: the standard AWS
        variables, which pyarrow's S3 filesystem (and so Ray Data and Ray Train) read."""
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_KEY, "AWS_DEFAULT_REGION": S3_REGION,
                "AWS_REGION": S3_REGION, "AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_EC2_METADATA_DISABLED": "true"}

    def create_bucket(self, name: str) -> str:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(access_key=S3_KEY, secret_key=S3_KEY, region=S3_REGION,
                               endpoint_override=self.endpoint, allow_bucket_creation=True)
        fs.create_dir(name)
        return f"s3://{name}"

    def close(self) -> None:
        stop(self.proc, timeout=10)


# ----------------------------------------------------------------------------- Ray nodes
def _moved_ports(head: bool) -> dict[str, int]:
    """Every port `ray start` would otherwise take from Ray's fixed defaults, distinct."""
    names = ["dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "node-manager-port", "object-manager-port"]
    if head:
        names += ["ray-client-server-port", "port", "dashboard-port"]
    return dict(zip(names, free_ports(len(names))))


def start_node(log: Path, env: dict[str, str], *, head_address: str | None = None, num_cpus: int = 2,
               resources: dict[str, float] | None = None,
               temp_dir: str | None = None) -> tuple[subprocess.Popen, dict[str, str]]:
    """`ray start --block` as a head (``head_address`` None) or a node joining ``head_address``.

    A second node on the same machine needs its own ``temp_dir``: with the head's, both nodes'
    runtime-env agents unpack the same job package into the same directory, and one replaces it
    under the other's running processes. Returns (process, info): info has ``gcs`` (host:port) and,
    for a head, ``dashboard`` (http URL).
    """
    ports = _moved_ports(head_address is None)
    args = [f"{BIN}/ray", "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
            *(f"--{name}={port}" for name, port in ports.items())]
    if resources:
        args.append(f"--resources={json.dumps(resources)}")
    if temp_dir:
        args.append(f"--temp-dir={temp_dir}")
    info: dict[str, str] = {}
    before = read_address_file()
    if head_address is None:
        port, dash = ports["port"], ports["dashboard-port"]
        args += ["--head", "--dashboard-host=127.0.0.1", "--include-dashboard=true"]
        info = {"gcs": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}"}
    else:
        args.append(f"--address={head_address}")
        info = {"gcs": head_address}
    proc = subprocess.Popen(args, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    if head_address is None:
        _address_file_before[proc.pid] = before
    return proc, info


def wait_for_head(proc: subprocess.Popen, dashboard: str, env: dict[str, str], log: Path,
                  timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run([f"{BIN}/ray", "job", "list", "--address", dashboard], env=env,
                           capture_output=True, text=True)
        if r.returncode == 0:
            return
        if proc.poll() is not None:
            raise RuntimeError("ray start --head exited:\n" + log.read_text()[-3000:])
        time.sleep(2)
    raise RuntimeError("head node did not come up:\n" + log.read_text()[-3000:])


def alive_nodes(dashboard: str, env: dict[str, str]) -> list[dict]:
    """The cluster's alive nodes (Ray's state API through the dashboard), with their resources."""
    r = subprocess.run([f"{BIN}/ray", "list", "nodes", "--address", dashboard, "--detail", "--format", "json",
                        "--filter", "state=ALIVE"], env=env, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return []
    try:
        return json.loads(r.stdout)
    except ValueError:  # seen under load (CI, load average 56): exit 0 with no JSON yet -- poll again
        return []


def wait_for_nodes(dashboard: str, env: dict[str, str], n: int, procs: list[subprocess.Popen],
                   timeout: float = 120) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        nodes = alive_nodes(dashboard, env)
        if len(nodes) >= n:
            return nodes
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a Ray node process exited")
        time.sleep(2)
    raise RuntimeError(f"fewer than {n} nodes came up")


# ----------------------------------------------------------------------------- jobs
def submit(dashboard: str, env: dict[str, str], submission_id: str, entrypoint: list[str],
           runtime_env: dict | None = None) -> None:
    """`ray job submit --no-wait --working-dir <checkout>`; retries while the job agent starts."""
    cmd = [f"{BIN}/ray", "job", "submit", "--address", dashboard, "--working-dir", ROOT, "--no-wait",
           "--submission-id", submission_id]
    if runtime_env:
        cmd += ["--runtime-env-json", json.dumps(runtime_env)]
    cmd += ["--", *entrypoint]
    for _ in range(20):  # the head's job agent may need a few more seconds than the dashboard
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
        if r.returncode == 0 or "No available agent" not in r.stderr:
            break
        time.sleep(3)
    if r.returncode != 0:
        raise RuntimeError(f"ray job submit failed:\n{r.stderr[-3000:]}")


def wait_job(dashboard: str, submission_id: str, timeout: float = 300) -> tuple[str, str]:
    """(final status, logs) of a submitted job ("TIMEOUT" if it did not finish in time)."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(dashboard)
    status = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(submission_id)
        if status.is_terminal():
            break
        time.sleep(3)
    logs = client.get_job_logs(submission_id)
    return (status.value if status is not None and status.is_terminal() else "TIMEOUT"), logs
