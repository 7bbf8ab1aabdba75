"""The options of ``s2s-tasks serve``: the command line (argparse, nothing heavy imported, so
``--help`` is instant), checked into a :class:`ServeOptions`; a bad option ends the command with
one paragraph naming it and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, NoReturn, Optional, Sequence

PROG = "s2s-tasks serve"

DESCRIPTION = """\
Answer a trained checkpoint's task over HTTP with a JSON API (FastAPI + uvicorn).

endpoints:
  POST /v1/translate, /v1/summarize, /v1/reply, /v1/classify, /v1/tag, /v1/answer, /v1/extract
                 the checkpoint's task (a multi-task checkpoint: the verbs of its tasks)
  POST /v1/predict  any record the model reads (multi-task: records name their task)
  GET  /v1/info     task, input fields, limits, decoding defaults
  GET  /health      200 {"status": "ok", ...} once the model is loaded
  GET  /metrics     Prometheus text format: requests, latency, batch sizes, records answered

request:  {"inputs": [{"source": "ein Hund"}, ...], "parameters": {"max_length": 32, "beam_size": 4}}
          or {"input": {...}}; a plain string for a task read from one text field
response: {"outputs": [answer, ...], "model": ..., "task": ...} ({"output": answer} for "input")
          answers are the records `s2s-tasks predict` writes; errors are {"error": "..."} with a 4xx
"""

EPILOG = """\
examples:
  s2s-tasks serve --ckpt_path outputs/translation/version_0/checkpoints/last.ckpt
  curl -s localhost:8000/v1/translate -d '{"inputs": [{"source": "The foxes were slow."}]}'
  s2s-tasks serve --ckpt_path model.ckpt --host 0.0.0.0 --port 9000 --max_wait_ms 10 --beam_size 2
"""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; a request over a limit gets a 4xx naming the option."""

    max_request_bytes: int = 1_000_000
    max_records_per_request: int = 64
    max_field_chars: int = 20_000
    max_decode_length: int = 256
    max_beam_size: int = 8

    def as_dict(self) -> Dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Batching:
    """How concurrent requests are gathered into one model call."""

    max_batch_records: int = 32
    max_wait_ms: float = 5.0


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``s2s-tasks serve`` was told (see :func:`build_parser` for each option)."""

    ckpt_path: str
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "cpu"
    quantize: Optional[str] = None
    threads: Optional[int] = None
    model_name: Optional[str] = None
    log_level: str = "info"
    batching: Batching = field(default_factory=Batching)
    limits: Limits = field(default_factory=Limits)
    #: decoding settings changed from the checkpoint's (keys of model.generation)
    generation: Dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The model's name in responses and metrics."""
        return self.model_name or self.ckpt_path


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one paragraph (the option, the problem, where the options are)."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    """End ``s2s-tasks serve`` with a one-paragraph error and exit status 2."""
    text = " ".join(message.split())
    sys.stderr.write(f"{PROG}: error: {text} ({PROG} --help lists the options)\n")
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``s2s-tasks serve`` argument parser."""
    parser = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, metavar="X.ckpt", help="a checkpoint written by s2s-tasks fit")
    where = parser.add_argument_group("where and how the model runs")
    where.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for every interface)")
    where.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s; 0 picks a free one, printed at start)")
    where.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    where.add_argument("--quantize", choices=["int8"], default=None,
                       help="int8: dynamic int8 quantisation of the linear layers (CPU only; default: the trained precision)")
    where.add_argument("--threads", type=int, default=None, help="torch threads for the model (default: torch's own choice)")
    where.add_argument("--model_name", default=None, help="the model's name in responses (default: the --ckpt_path)")
    where.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                       help="server log level (default: %(default)s)")
    batching = parser.add_argument_group("request batching (concurrent requests share one model call)")
    batching.add_argument("--max_batch_records", type=int, default=Batching.max_batch_records,
                          help="records gathered into one model call at most (default: %(default)s); a larger request runs alone")
    batching.add_argument("--max_wait_ms", type=float, default=Batching.max_wait_ms,
                          help="how long the first request of a batch waits for others, in ms (default: %(default)s; 0: no wait)")
    limits = parser.add_argument_group("limits (a request over one gets a 4xx error naming the option)")
    limits.add_argument("--max_request_bytes", type=int, default=Limits.max_request_bytes,
                        help="request body size (default: %(default)s; 413 above)")
    limits.add_argument("--max_records_per_request", type=int, default=Limits.max_records_per_request,
                        help="records in one request (default: %(default)s; 413 above)")
    limits.add_argument("--max_field_chars", type=int, default=Limits.max_field_chars,
                        help="characters in one field of a record, a list's items together (default: %(default)s; 413 above)")
    limits.add_argument("--max_decode_length", type=int, default=Limits.max_decode_length,
                        help="the largest max_length a request may ask for (default: %(default)s; 422 above)")
    limits.add_argument("--max_beam_size", type=int, default=Limits.max_beam_size,
                        help="the largest beam_size and n_best a request may ask for (default: %(default)s; 422 above)")
    decoding = parser.add_argument_group("decoding defaults (models that generate text; default: the checkpoint's "
                                         "model.generation; a request's \"parameters\" override them)")
    decoding.add_argument("--strategy", choices=["greedy", "beam", "sample"], default=None, help="decoding strategy")
    decoding.add_argument("--beam_size", type=int, default=None, help="beams per input (beam search)")
    decoding.add_argument("--max_length", type=int, default=None, help="new tokens per output at most")
    decoding.add_argument("--generation", action="append", default=[], metavar="KEY=VALUE",
                          help="any other model.generation setting, e.g. --generation length_penalty=0.6 (repeatable)")
    return parser


def _generation_changes(args: argparse.Namespace) -> Dict[str, Any]:
    changes: Dict[str, Any] = {}
    for item in args.generation:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            fail(f"argument --generation: {item!r} is not KEY=VALUE (e.g. --generation length_penalty=0.6)")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare word such as beam
        changes[key.strip()] = value
    for key in ("strategy", "beam_size", "max_length"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    return changes


def _check_at_least(args: argparse.Namespace, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            fail(f"argument --{name}: must be >= {minimum:g} (got {value!r})")


def parse_options(argv: Sequence[str]) -> ServeOptions:
    """``argv`` (the arguments after ``serve``) -> checked options; a bad one exits with status 2."""
    args = build_parser().parse_args(list(argv))
    if not 0 <= args.port <= 65535:
        fail(f"argument --port: must be a TCP port from 0 to 65535 (got {args.port})")
    _check_at_least(args, 1, "threads", "max_batch_records", "max_request_bytes", "max_records_per_request",
                    "max_field_chars", "max_decode_length", "max_beam_size", "beam_size")
    _check_at_least(args, 0, "max_wait_ms", "max_length")
    if args.max_length is not None and args.max_length > args.max_decode_length:
        fail(f"argument --max_length: the default {args.max_length} is above --max_decode_length {args.max_decode_length}; "
             "lower --max_length or raise --max_decode_length")
    if args.beam_size is not None and args.beam_size > args.max_beam_size:
        fail(f"argument --beam_size: the default {args.beam_size} is above --max_beam_size {args.max_beam_size}; "
             "lower --beam_size or raise --max_beam_size")
    path = Path(args.ckpt_path)
    if not path.is_file():
        fail(f"argument --ckpt_path: {args.ckpt_path} " + ("is a directory" if path.is_dir() else "does not exist")
             + "; pass a .ckpt file written by s2s-tasks fit (e.g. outputs/TASK/version_0/checkpoints/last.ckpt)")
    return ServeOptions(
        ckpt_path=args.ckpt_path, host=args.host, port=args.port, device=args.device, quantize=args.quantize,
        threads=args.threads, model_name=args.model_name, log_level=args.log_level,
        batching=Batching(max_batch_records=args.max_batch_records, max_wait_ms=args.max_wait_ms),
        limits=Limits(max_request_bytes=args.max_request_bytes, max_records_per_request=args.max_records_per_request,
                      max_field_chars=args.max_field_chars, max_decode_length=args.max_decode_length,
                      max_beam_size=args.max_beam_size),
        generation=_generation_changes(args),
    )

