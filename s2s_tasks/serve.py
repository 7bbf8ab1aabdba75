"""``s2s-tasks serve --ckpt_path X.ckpt``: answer a checkpoint's task over HTTP with a JSON API
(FastAPI + uvicorn), with request batching, limits, ``/health`` and Prometheus ``/metrics``.
The parts are in :mod:`s2s_tasks.serving`; ``s2s-tasks serve --help`` lists the options."""

from __future__ import annotations

import logging
from typing import List, Optional

from s2s_tasks.serving.options import ServeOptions, fail, parse_options

log = logging.getLogger(__name__)


def _check_installed() -> None:
    missing = []
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        fail(f"serving needs {', '.join(missing)}, not installed here: pip install 's2s-tasks[serve]' "
             "(or pip install fastapi uvicorn prometheus-client)")


def load_model(options: ServeOptions):
    """The :class:`~s2s_tasks.serving.model.ServedModel` of ``options`` (a bad checkpoint,
    device or decoding setting ends the command with a one-paragraph error)."""
    import torch

    from s2s_tasks.inference import Predictor
    from s2s_tasks.serving.model import ServedModel

    if options.threads is not None:
        torch.set_num_threads(options.threads)
    try:
        predictor = Predictor.from_checkpoint(options.ckpt_path, device=options.device, quantize=options.quantize)
    except (ValueError, RuntimeError, ImportError, OSError) as err:
        fail(f"argument --ckpt_path: cannot serve {options.ckpt_path} on --device {options.device}"
             f"{' with --quantize ' + options.quantize if options.quantize else ''}: {err}")
    try:
        return ServedModel(predictor, options.name, options.generation, options.limits.max_decode_length)
    except ValueError as err:
        fail(f"decoding defaults (--strategy, --beam_size, --max_length, --generation): {err}")


def main(argv: Optional[List[str]] = None) -> None:
    """Run the server until interrupted; ``argv`` is the command line after ``serve``."""
    options = parse_options(argv or [])
    _check_installed()
    from s2s_tasks.cli import _configure_logging
    from s2s_tasks.serving.app import create_app
    from s2s_tasks.serving.server import bind_socket, serve_forever, url_of

    _configure_logging()
    model = load_model(options)
    try:
        sock = bind_socket(options.host, options.port)
    except OSError as err:
        fail(f"argument --port: cannot listen on {options.host}:{options.port} ({err.strerror or err}); "
             "choose another --port (0 picks a free one) or --host")
    app = create_app(model, options.limits, options.batching, device=options.device)
    url = url_of(sock)
    routes = ", ".join(f"POST {e.path}" for e in model.endpoints)
    print(f"s2s-tasks serve: {model.task} model {model.name} on {url} ({routes}; GET /v1/info, /health, /metrics)",
          flush=True)
    try:
        serve_forever(app, sock, options.log_level)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down gracefully and raises it again
        print("s2s-tasks serve: stopped", flush=True)
