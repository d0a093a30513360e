"""Start or stop a one-machine Ray cluster that runs jobs with this checkout's environment.

    .venv/bin/python jobs/cluster.py up   [--dir runs/cluster] [--port 6379] [--dashboard-port 8265]
                                          [--num-cpus N] [-- extra `ray start` flags]
    .venv/bin/python jobs/cluster.py down [--dir runs/cluster]

(`make cluster-up` / `make cluster-down` run these with .venv's Python.)

`ray job submit ... -- python jobs/train.py` runs its entrypoint with the `python` found on the PATH
of the `ray start` that started the cluster, not the one of the shell that submits. `up` starts
`ray start --head` with the bin directory of the Python running this script (.venv/bin) first on
PATH, so a job's `python` is .venv's, whatever the user's shell has activated. Its dashboard (and
job API) listens on 127.0.0.1. It runs in its own process group; `up` records its pid, log and addresses under
--dir, and `down` stops exactly that cluster (unlike `ray stop`, which stops every Ray of this user
on the machine) and removes the address it left in /tmp/ray/ray_current_cluster.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

# `ray start` flags for ports that only Ray's own processes use: Ray's fixed defaults (52365, 10001,
# ...) fail or stall a second Ray on the machine, so `up` gives each a free port unless told one
INTERNAL_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                  "runtime-env-agent-port", "node-manager-port", "object-manager-port", "ray-client-server-port")




def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _state(d: str) -> dict | None:
    text = _read(os.path.join(d, "head.json"))
    return json.loads(text) if text else None


def _dashboard_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _crnn():
    """``crnn.raycompat`` and ``crnn.runtime``, imported late: run as a script, this makes ``crnn``
    importable from the checkout first."""
    if not __package__:
        import _bootstrap  # noqa: F401
    from crnn import raycompat, runtime

    return raycompat, runtime


def up(a) -> int:
    d = os.path.abspath(a.dir)
    state = _state(d)
    if state and _alive(state["pid"]):
        print(f"cluster-up: a cluster started from here is already running (pid {state['pid']}, dashboard "
              f"{state['dashboard']}); `make cluster-down` stops it", file=sys.stderr)
        return 1
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    ray = os.path.join(bin_dir, "ray")
    if not os.access(ray, os.X_OK):
        print(f"cluster-up: no `ray` beside {sys.executable}; run `make venv` first", file=sys.stderr)
        return 2
    os.makedirs(d, exist_ok=True)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):  # a start of a new head must not chase another
        env.pop(var, None)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    gcs = f"127.0.0.1:{a.port}"
    dashboard = f"http://127.0.0.1:{a.dashboard_port}"
    cmd = [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={a.port}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={a.dashboard_port}"]
    if a.num_cpus is not None:
        cmd.append(f"--num-cpus={a.num_cpus}")
    given = {arg[2:].split("=")[0] for arg in a.ray_start_args if arg.startswith("--")}
    internal = [name for name in INTERNAL_PORTS if name not in given]
    raycompat, runtime = _crnn()
    from crnn.storage import write_json

    cmd += [f"--{name}={port}" for name, port in zip(internal, runtime.free_ports(len(internal)))]
    cmd += a.ray_start_args
    log = os.path.join(d, "head.log")
    before = raycompat.read_address_file()  # `down` puts it back (raycompat.restore_address_file)
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    state = {"pid": proc.pid, "port": a.port, "gcs": gcs, "dashboard": dashboard, "log": log, "address_file_before": before}

    write_json(os.path.join(d, "head.json"), state)  # whole or not at all: `down` reads it
    deadline = time.time() + a.timeout
    while not (_dashboard_up(dashboard) and raycompat.job_agent_ready(gcs)):
        if proc.poll() is not None or time.time() > deadline:
            why = ("exited" if proc.poll() is not None else
                   f"did not take jobs within {a.timeout:.0f} s (dashboard {'up' if _dashboard_up(dashboard) else 'down'}"
                   "; the job agent's log is dashboard_agent.log in the session's logs directory)")
            _stop(d, state)
            print(f"cluster-up: `ray start --head` {why}; its log ({log}) ends:\n{(_read(log) or '')[-3000:]}",
                  file=sys.stderr)
            return 1
        time.sleep(1)
    print(f"Ray cluster up: dashboard and job API at {dashboard} (jobs run with {bin_dir}/python)\n"
          f"  log: {log}\n  stop it with: make cluster-down", flush=True)
    return 0


def _stop(d: str, state: dict) -> None:
    pid = state["pid"]
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)  # `ray start --block` stops the Ray processes it started
        deadline = time.time() + 60
        while _alive(pid) and time.time() < deadline:
            try:  # reap it when it is our child (`up` failing); otherwise it is not, and this raises
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.5)
    try:
        os.killpg(pid, signal.SIGKILL)  # leftovers of its process group only
    except (ProcessLookupError, PermissionError):
        pass
    # a terminated `ray start --block` leaves its address behind, and later local Rays chase it
    raycompat, _ = _crnn()
    raycompat.restore_address_file(state["port"], state.get("address_file_before"))
    os.unlink(os.path.join(d, "head.json"))


def down(a) -> int:
    d = os.path.abspath(a.dir)
    state = _state(d)
    if state is None:
        print(f"cluster-down: no cluster started from here ({d}/head.json is absent)")
        return 0
    _stop(d, state)
    print(f"Ray cluster stopped (pid {state['pid']}, dashboard {state['dashboard']})")
    return 0


class _Parser(argparse.ArgumentParser):
    """crnn.config.JobArgumentParser's one-line errors (``prog: error: ...``, exit 2), without
    importing crnn (and torch) into this small launcher."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())} (see --help)\n")


def main(argv=None) -> int:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start the head node (in the background) and wait until it takes jobs")
    u.add_argument("--dir", default="runs/cluster", help="where its pid, addresses and log are kept")
    u.add_argument("--port", type=int, default=6379, help="GCS port (the cluster address 127.0.0.1:PORT)")
    u.add_argument("--dashboard-port", type=int, default=8265, help="dashboard and job API port")
    u.add_argument("--num-cpus", type=int, help="CPUs the cluster offers (default: all of this machine's)")
    u.add_argument("--timeout", type=float, default=180, help="seconds to wait for the head to take jobs")
    u.add_argument("ray_start_args", nargs="*", help="more `ray start` flags, after --")
    dn = sub.add_parser("down", help="stop the cluster `up` started from --dir")
    dn.add_argument("--dir", default="runs/cluster")
    from crnn.config import job_warnings

    job_warnings(p.prog)  # subcommands: parse_args, not parse_job_args (parse_intermixed_args refuses subparsers)
    a = p.parse_args(argv)
    for port in ("port", "dashboard_port"):
        if a.cmd == "up" and not 0 < getattr(a, port) < 65536:
            p.error(f"--{port.replace('_', '-')} must be a port number (1..65535)")
    return up(a) if a.cmd == "up" else down(a)


if __name__ == "__main__":
    sys.exit(main())
