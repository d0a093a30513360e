"""Connecting to Ray the same way from every job: a cluster when there is one, else embedded."""

from __future__ import annotations

import os


def init_ray(num_cpus: int | None = None, **kwargs):
    """``ray.init`` for jobs: joins ``RAY_ADDRESS`` (set by ``ray job submit``; ``auto`` joins a
    cluster started on this machine with ``ray start``) or else starts an embedded local Ray, even
    when some other Ray runs on the machine. Usage stats are off unless the user turned them on.
    Idempotent inside one process.

    An embedded Ray gets its dashboard on a free port, and Ray's state API in every Ray process it
    starts pinned to that dashboard (``raycompat.pin_state_api``, a Ray workaround; this process's
    environment stays as it was); ``pinned_state_api()`` tells the URL.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from crnn import raycompat

    if ray.is_initialized():
        return ray
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
        return ray
    global _pinned
    _pinned = None
    given = dict(kwargs)
    if not raycompat.state_api_pinned() and kwargs.get("include_dashboard", True) is not False:
        kwargs.setdefault("dashboard_port", free_port())
        kwargs.setdefault("dashboard_host", "127.0.0.1")
        kwargs["include_dashboard"] = True
        url = f"http://{kwargs['dashboard_host']}:{kwargs['dashboard_port']}"
        try:
            with raycompat.pin_state_api(url):
                ray.init(address="local", num_cpus=num_cpus, **kwargs)
            _pinned = url
            return ray
        except Exception as e:
            if "include_dashboard" in given:  # the caller asked for the dashboard: its failure is theirs
                raise
            # e.g. Ray installed without the dashboard's dependencies: start as Ray would by default
            import warnings

            warnings.warn(f"embedded Ray with a dashboard failed ({e}); starting it without the state-API pin")
            ray.shutdown()
    ray.init(address="local", num_cpus=num_cpus, **given)
    return ray


def pinned_state_api() -> str | None:
    """The dashboard URL the last embedded Ray's processes use for Ray's state API (None: unpinned)."""
    return _pinned


_pinned: str | None = None


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1. All sockets stay bound until every port is
    picked: one at a time, the OS may hand the same port out twice, and `ray start` refuses two
    components on one port. (A port can still be taken between this call and its use.)"""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """One free TCP port on 127.0.0.1 (:func:`free_ports`)."""
    return free_ports(1)[0]


ALLOW_LOCAL_STORAGE_ENV = "CRNN_ALLOW_LOCAL_STORAGE"


def check_shared_storage(paths: dict[str, str], use_gpu: bool = False) -> None:
    """Refuse node-local paths (``paths``: what -> path) when the work may run on other nodes.

    On a cluster with more than one alive node (or when GPU workers are requested but this node
    has no GPU, so they will run elsewhere, e.g. on autoscaled workers) Ray Data read tasks, Train
    workers and the Train controller run on other machines, which cannot see this machine's disk:
    data, run directories and models must then be URIs such as ``s3://bucket/prefix``. A path that
    *is* shared (an NFS or EFS mount at the same path on every node) is allowed with
    ``CRNN_ALLOW_LOCAL_STORAGE=1`` (set it in the job's runtime_env so every node sees it).
    """
    from crnn.storage import is_local

    if os.environ.get(ALLOW_LOCAL_STORAGE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return
    local = {what: p for what, p in paths.items() if p and is_local(p)}
    import ray

    if not local or not ray.is_initialized():
        return
    alive = [n for n in ray.nodes() if n.get("Alive")]
    why = None
    if len(alive) > 1:
        why = f"this Ray cluster has {len(alive)} nodes"
    elif use_gpu:
        here = ray.get_runtime_context().get_node_id()
        if not any(n.get("NodeID") == here and n.get("Resources", {}).get("GPU", 0) > 0 for n in alive):
            why = "GPU workers were requested but this node has no GPU, so they can only run on other nodes"
    if why is None:
        return
    listed = ", ".join(f"{what}={p!r}" for what, p in local.items())
    one = len(local) == 1
    raise ValueError(
        f"{why}, but {listed} {'is a node-local path' if one else 'are node-local paths'}: other nodes "
        f"cannot read or write {'it' if one else 'them'}. Use shared storage, e.g. s3://BUCKET/..., or, if "
        f"{'it is a shared mount' if one else 'they are on a shared mount'} (NFS/EFS) at the same place on "
        f"every node, set {ALLOW_LOCAL_STORAGE_ENV}=1 (in the job's runtime_env env_vars).")


def per_second(count: float, seconds: float) -> str:
    """``count / seconds`` for a job's summary line: whole numbers from 10 up, else two significant
    digits (a small run's "0.45", not "0"), "<0.01" below that (no exponent); "inf" for ``seconds <= 0``."""
    if seconds <= 0:
        return "inf"
    r = count / seconds
    return f"{r:.0f}" if r >= 10 else f"{r:.2g}" if r >= 0.01 or r == 0 else "<0.01"
