"""Serve a trained model over HTTP with Ray Serve until stopped (Ctrl-C or SIGTERM).

    python jobs/serve.py --model runs/make-run/train/model [--host 127.0.0.1] [--port 8000]
    python jobs/serve.py --config serve.yaml [--model PATH]      # deployment options from the file

Then: http://127.0.0.1:8000/docs (OpenAPI), POST /forecast, GET /healthz, GET /model. Listens on
127.0.0.1 unless --host says otherwise. Runs on an embedded local Ray unless RAY_ADDRESS points at a
cluster. The model directory carries its config; --config (a Serve config file such as serve.yaml)
sets replicas/autoscaling, CPUs/GPUs per replica, batching and request limits of both deployments:
the ingress (request parsing, CPU) and the model (forward pass, CPU or GPU); the flags override it.
"""

import os
import signal
import sys
import threading

if not __package__:  # run as a script (python jobs/x.py): make crnn importable from the checkout
    import _bootstrap  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    from crnn.config import JobArgumentParser, USAGE_ERRORS, parse_job_args, usage_error

    p = JobArgumentParser(description=__doc__)
    p.add_argument("--model", help="model directory (local path or URI); required unless --config gives args.model")
    p.add_argument("--host", help="address to listen on (default: the config's http_options.host, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default: the config's http_options.port, else 8000)")
    p.add_argument("--config", help="Serve config YAML (e.g. serve.yaml): args, deployments, http_options")
    p.add_argument("--name", default="crnn", help="Serve application name")
    p.add_argument("--num-replicas", type=int, help="fixed number of model replicas (instead of autoscaling)")
    p.add_argument("--num-gpus", type=float, help="GPUs per model replica (ray_actor_options.num_gpus)")
    p.add_argument("--num-cpus", type=float, help="CPUs per model replica (ray_actor_options.num_cpus)")
    p.add_argument("--ingress-replicas", type=int, help="ingress replicas (HTTP parsing on CPUs; default 1)")
    p.add_argument("--ingress-num-cpus", type=float, help="CPUs per ingress replica (default 1)")
    p.add_argument("--tta", choices=("none", "hflip"), help="test-time augmentation (default: the config's, else "
                   "none): hflip = the mean of each forecast and the mirrored forecast of the mirrored series")
    p.add_argument("--mirror-axis", type=float, metavar="COLUMN", help="with --tta hflip: the pixel column to mirror "
                   "about (default: the model's training data's axis)")
    p.add_argument("--ray-num-cpus", type=int, help="CPUs of an embedded local Ray")

    a = parse_job_args(p, argv)

    from crnn.checkpoint import check_model_dir
    from crnn.inference import image_size
    from crnn.mirror import model_tta_axis
    from crnn.serve import ServeSettings, build_app, load_serve_config

    args, http = ({}, {})
    try:
        if a.config:
            args, http = load_serve_config(a.config)
        if a.model:
            args["model"] = a.model
        if "model" not in args:
            p.error("--model is required (or args.model in --config)")
        if a.tta is not None:
            args["tta"] = a.tta
        if a.mirror_axis is not None:
            args["mirror_axis"] = a.mirror_axis
        if a.num_replicas is not None:
            args["num_replicas"], args["autoscaling_config"] = a.num_replicas, None
        actor = dict(args.get("ray_actor_options") or {})
        if a.num_gpus is not None:
            actor["num_gpus"] = a.num_gpus
        if a.num_cpus is not None:
            actor["num_cpus"] = a.num_cpus
        if actor:
            args["ray_actor_options"] = actor
        ingress = dict(args.get("ingress") or {})
        if a.ingress_replicas is not None:
            ingress["num_replicas"] = a.ingress_replicas
        if a.ingress_num_cpus is not None:
            ingress["ray_actor_options"] = {**ingress.get("ray_actor_options", {}), "num_cpus": a.ingress_num_cpus}
        if ingress:
            args["ingress"] = ingress
        settings = ServeSettings.model_validate(args)
    except (OSError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        return usage_error(p.prog, ValueError(f"bad settings: {_brief(e)}"))
    host = a.host or http.get("host") or "127.0.0.1"
    port = a.port if a.port is not None else (http.get("port") or 8000)
    try:  # the model directory, before Ray starts (a replica would refuse to start with the same error)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"--port must be an integer 1-65535, got {port!r}")
        if a.ray_num_cpus is not None and a.ray_num_cpus < 1:
            raise ValueError(f"--ray-num-cpus must be >= 1, got {a.ray_num_cpus}")
        gpus = settings.ray_actor_options.num_gpus or 0
        if gpus > 0 and not os.environ.get("RAY_ADDRESS"):  # an embedded Ray has this machine's GPUs only
            import torch

            if torch.cuda.device_count() == 0:  # the replicas would wait for a GPU forever
                raise ValueError(f"replicas ask for {gpus:g} GPU(s) (--num-gpus / ray_actor_options.num_gpus) "
                                 "but this machine has no CUDA device and Ray starts here; leave them out, or "
                                 "set RAY_ADDRESS to a cluster with GPUs")
        cfg, payload = check_model_dir(settings.model)
        size = image_size(cfg.model)  # the axis a replica would mirror about (it would refuse the same way)
        model_tta_axis(settings.tta, settings.mirror_axis, payload.get("data"), size[1] if size else None,
                       settings.model)
    except USAGE_ERRORS as e:
        return usage_error(p.prog, e)

    from ray import serve

    from crnn.runtime import init_ray

    kwargs = {}
    if not os.environ.get("RAY_ADDRESS"):  # replicas of an embedded Ray import crnn from this checkout
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": ROOT}}
    init_ray(num_cpus=a.ray_num_cpus, **kwargs)
    serve.start(http_options={"host": host, "port": int(port)})
    serve.run(build_app(settings), name=a.name, route_prefix="/")
    print(f"serving {settings.model} at http://{host}:{port}  (docs: http://{host}:{port}/docs); "
          "Ctrl-C to stop", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        print("stopping Serve", flush=True)
        serve.shutdown()
    return 0


def _brief(e: Exception) -> str:
    """One line for a settings error: pydantic's ValidationError as 'field: message; ...'."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        try:
            return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in errors())
        except Exception:
            pass
    return str(e)


if __name__ == "__main__":
    sys.exit(main())
