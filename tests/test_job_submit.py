"""The README's "As a Ray job on this machine" block, run line by line exactly as written.

A newcomer types those lines in a shell where nothing is activated: the `python`, `python3`, `ray`
and `serve` on their PATH are not the project's (or do not exist). This test gives the lines such a
PATH, whose first entries are shims that fail loudly, so it fails whenever the README's path relies
on the user's PATH (e.g. a bare `ray start --head`, whose jobs would run the shell's `python`).

The lines run in a copy of the checkout (they write `data/` and `runs/` under it) whose `.venv` is
the environment running the tests. Only what the README leaves to the defaults is moved: the
cluster's address and dashboard ports (Makefile variables, and RAY_ADDRESS for the job commands),
so other Rays on the machine cannot collide, and its CPUs (2, like this machine).
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.cluster_utils import ROOT, free_ports, read_address_file, restore_address_file

MARKER = "<!-- newcomer-job -->"
SHIMMED = ("python", "python3", "ray", "serve")


def readme_block(marker: str = MARKER) -> list[str]:
    """The command lines of the fenced block right after ``marker`` in README.md."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    m = re.search(re.escape(marker) + r"\s*```bash\n(.*?)```", text, re.S)
    assert m, f"README.md has no ```bash block after {marker}"
    return [line for line in (raw.strip() for raw in m.group(1).splitlines()) if line and not line.startswith("#")]


def newcomer_path(shims: str) -> str:
    """PATH as a user without the venv activated has it, after shims for every project command."""
    venv_bins = {os.path.realpath(os.path.join(sys.prefix, "bin")), os.path.realpath(os.path.dirname(sys.executable))}
    rest = [p for p in os.environ["PATH"].split(os.pathsep) if p and os.path.realpath(p) not in venv_bins]
    return os.pathsep.join([shims, *rest])


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the checkout (mtimes kept, so make sees .venv up to date) with .venv -> this venv."""
    dst = tmp_path_factory.mktemp("newcomer") / "crnn-forecast"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "data", "__pycache__", ".pytest_cache", "*.egg-info", "build", ".devbundle",
        ".whl"))
    for tool in ("python", "ray"):
        assert os.access(os.path.join(sys.prefix, "bin", tool), os.X_OK), f"no {tool} in {sys.prefix}/bin"
    os.symlink(sys.prefix, dst / ".venv")
    shims = tmp_path_factory.mktemp("shims")
    for name in SHIMMED:
        shim = shims / name
        shim.write_text(f"#!/bin/sh\necho 'shim: the README path ran {name} from the user PATH, not .venv' >&2\n"
                        "exit 97\n")
        shim.chmod(0o755)
    return dst, str(shims)


@pytest.mark.e2e
def test_readme_ray_job_path_as_written(checkout):
    dst, shims = checkout
    lines = readme_block()
    # the block is the whole path: start, submit, follow, stop the job, stop the cluster
    assert lines[0].startswith("make cluster-up") and lines[-1].startswith("make cluster-down"), lines
    assert any(" job logs -f " in line for line in lines) and any(" job stop " in line for line in lines), lines

    port, dash = free_ports(2)  # `make cluster-up` gives Ray's internal ports free ones itself
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "RAY_API_SERVER_ADDRESS")}
    env.update(PATH=newcomer_path(shims), PWD=str(dst), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               CLUSTER_PORT=str(port), CLUSTER_DASHBOARD_PORT=str(dash), RAY_ADDRESS=f"http://127.0.0.1:{dash}",
               CLUSTER_ARGS="--num-cpus=2")
    before = read_address_file()
    outputs, head_pid = {}, None
    try:
        for line in lines:
            r = subprocess.run(["bash", "-c", line], cwd=dst, env=env, capture_output=True, text=True, timeout=600)
            outputs[line] = r.stdout + r.stderr
            assert r.returncode == 0, f"README line failed (exit {r.returncode}): {line}\n{outputs[line][-4000:]}"
            if head_pid is None:
                head_pid = json.loads((dst / "runs" / "cluster" / "head.json").read_text())["pid"]
    finally:
        state_file = dst / "runs" / "cluster" / "head.json"
        if state_file.exists():  # a line failed before `make cluster-down`: stop the cluster anyway
            state = json.loads(state_file.read_text())
            subprocess.run(["make", "cluster-down"], cwd=dst, env=env, capture_output=True, timeout=120)
            try:
                os.killpg(state["pid"], 9)
            except ProcessLookupError:
                pass
            if (read_address_file() or b"").strip().endswith(f":{port}".encode()):
                restore_address_file(before)

    # the data job wrote where the README says, outside the job's copy of the working directory
    assert (dst / "data" / "pines300" / "dataset.json").exists()
    logs = next(out for line, out in outputs.items() if " job logs -f " in line)
    assert f"run directory: {dst}/runs/quick" in logs, logs[-4000:]
    status = next(out for line, out in outputs.items() if " job status " in line)
    assert "Job 'quick' succeeded" in status, status
    run = dst / "runs" / "quick"
    assert (run / "model" / "model.pt").exists()
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3  # header + the quick preset's 2 epochs
    # `make cluster-down` stopped its cluster and took back the address `ray start` recorded
    assert not (dst / "runs" / "cluster" / "head.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(head_pid, 0)
    assert not (read_address_file() or b"").strip().endswith(f":{port}".encode())


def test_cluster_script_refuses_bad_input_without_starting_ray(tmp_path, capsys):
    from jobs import cluster

    # a second `make cluster-up` from the same place while the first cluster runs
    (tmp_path / "head.json").write_text(json.dumps({"pid": os.getpid(), "port": 1, "gcs": "127.0.0.1:1",
                                                    "dashboard": "http://127.0.0.1:2"}))
    assert cluster.main(["up", "--dir", str(tmp_path)]) == 1
    assert "already running" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cluster.main(["up", "--dir", str(tmp_path / "other"), "--dashboard-port", "70000"])
    assert "--dashboard-port must be a port number" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    # `make cluster-down` with nothing started is a no-op that says so
    assert cluster.main(["down", "--dir", str(tmp_path / "none")]) == 0
    assert "no cluster started from here" in capsys.readouterr().out
