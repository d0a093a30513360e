"""crnn.runtime.init_ray: an embedded Ray whose processes find *it* through Ray's state API."""

import json
import os
import subprocess
import sys

import pytest

from tests.cluster_utils import RAY_ADDRESS_FILE, ROOT, base_env, read_address_file, restore_address_file

pytestmark = pytest.mark.ray  # every test starts Ray in a subprocess

PROBE = r"""
import json, os, ray
from crnn.runtime import init_ray

@ray.remote(num_cpus=0)
def probe():
    from ray.util.state import list_nodes
    return os.environ.get("RAY_API_SERVER_ADDRESS"), len(list_nodes(timeout=20))

out = []
for _ in range(2):  # a second embedded Ray in the same process gets its own, live, address
    init_ray(num_cpus=1, log_to_driver=False)
    from crnn.runtime import pinned_state_api
    url = pinned_state_api()
    seen, nodes = ray.get(probe.remote(), timeout=60)
    out.append({"driver": url, "worker": seen, "nodes": nodes,
                "driver_env": os.environ.get("RAY_API_SERVER_ADDRESS")})
    ray.shutdown()
print("RESULT " + json.dumps(out))
"""


def test_embedded_ray_state_api_ignores_stale_cluster_file(tmp_path):
    """A killed `ray start` leaves /tmp/ray/ray_current_cluster behind; Ray's state API (which Ray
    Train's placement-group cleaner polls) would chase that dead address for 40 s. init_ray pins
    the state API of the embedded Ray to its own dashboard, in the driver and in every worker."""
    before = read_address_file()
    restore_address_file(b"127.0.0.1:9")  # nothing listens there: a dead cluster
    env = base_env(PYTHONPATH=ROOT)  # (base_env drops RAY_API_SERVER_ADDRESS)
    env.pop("RAY_ADDRESS", None)
    try:
        r = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=240)
    finally:
        restore_address_file(before)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    first, second = json.loads(lines[0][len("RESULT "):])
    for run in (first, second):
        assert run["driver"].startswith("http://127.0.0.1:")
        assert run["worker"] == run["driver"]  # inherited by the Ray processes
        assert run["nodes"] == 1  # the state API answered, from this Ray
        assert run["driver_env"] is None  # not left in the driver's environment (child processes
        # such as `ray job submit` would follow it to a dashboard that dies with this Ray)
    assert os.path.exists(RAY_ADDRESS_FILE) == (before is not None)


FALLBACK = r"""
import os, socket, warnings, ray
import crnn.runtime as R
busy = socket.socket(); busy.bind(("127.0.0.1", 0)); busy.listen(1)
R.free_port = lambda: busy.getsockname()[1]  # the dashboard cannot start there
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    R.init_ray(num_cpus=1, log_to_driver=False)
print("WARN", any("dashboard failed" in str(x.message) for x in w))
print("PIN", R.pinned_state_api(), os.environ.get("RAY_API_SERVER_ADDRESS"))
print("UP", ray.is_initialized() and ray.cluster_resources().get("CPU"))
ray.shutdown()
"""


def test_embedded_ray_starts_without_the_pin_when_the_dashboard_cannot(tmp_path):
    env = base_env(PYTHONPATH=ROOT)
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-c", FALLBACK], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARN True" in r.stdout and "PIN None None" in r.stdout and "UP 1.0" in r.stdout, r.stdout
