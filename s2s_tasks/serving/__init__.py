"""``s2s-tasks serve``: a checkpoint's task(s) over HTTP (the command is :mod:`s2s_tasks.serve`).

- :mod:`~s2s_tasks.serving.options`: the command line, checked;
- :mod:`~s2s_tasks.serving.model`: the predictor with its endpoints and decoding defaults;
- :mod:`~s2s_tasks.serving.requests`: one request's body, records and parameters, checked;
- :mod:`~s2s_tasks.serving.batching`: concurrent requests gathered into one model call;
- :mod:`~s2s_tasks.serving.metrics`: Prometheus metrics, a registry per server;
- :mod:`~s2s_tasks.serving.app`: the FastAPI app;
- :mod:`~s2s_tasks.serving.server`: uvicorn, in the foreground or a background thread.
"""
