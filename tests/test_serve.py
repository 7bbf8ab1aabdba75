"""``s2s-tasks serve``: a real uvicorn server on 127.0.0.1 (a background thread, a free port) per
test, spoken to over HTTP with the standard library: every task's endpoint answers what
``Predictor.predict`` answers, limits and malformed requests get clear 4xx errors and the server
keeps serving, /health and /metrics, request batching, a bounded load test and the command line."""

import contextlib
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlparse

import pytest
from test_inference import MULTITASK_TINY, TASKS, sample_records

from s2s_tasks.cli import main
from s2s_tasks.inference import Predictor
from s2s_tasks.serving.app import create_app
from s2s_tasks.serving.model import VERBS, ServedModel
from s2s_tasks.serving.options import Batching, Limits
from s2s_tasks.serving.server import BackgroundServer

pytestmark = pytest.mark.usefixtures("single_thread")

GENERATING = ("translation", "summarization", "dialogue")


class Client:
    """A JSON-over-HTTP client of one server (a new connection per request: safe across threads)."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port

    def request(self, method: str, path: str, body: Any = None, raw: Optional[bytes] = None) -> Tuple[int, Any]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(text) if kind.startswith("application/json") else text

    def post(self, path: str, body: Any = None, raw: Optional[bytes] = None) -> Tuple[int, Any]:
        return self.request("POST", path, body, raw)

    def get(self, path: str) -> Tuple[int, Any]:
        return self.request("GET", path)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of GET /metrics (0 if absent)."""
        status, text = self.get("/metrics")
        assert status == 200
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        line = re.search(rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$", text, re.M)
        return float(line.group(1)) if line else 0.0


@contextlib.contextmanager
def serving(ckpt: str, generation: Optional[Dict[str, Any]] = None, limits: Limits = Limits(),
            batching: Batching = Batching()):
    """A server of ``ckpt`` on a free port of 127.0.0.1 -> its :class:`Client`."""
    model = ServedModel(Predictor.from_checkpoint(ckpt), "tiny", generation, limits.max_decode_length)
    with BackgroundServer(create_app(model, limits, batching)) as server:
        yield Client(server.url)


def assert_same(answers: List[Dict[str, Any]], expected: List[Dict[str, Any]]) -> None:
    """Equal answers; floats (scores, probabilities) up to rounding of differently padded batches."""
    def close(a: Any, b: Any) -> bool:
        if isinstance(a, float) or isinstance(b, float):
            return a == pytest.approx(b, abs=1e-4)
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
        return a == b

    assert close(answers, expected), f"{answers} != {expected}"


# ----------------------------------------------------------------------------- every task
@pytest.mark.parametrize("task", TASKS)
def test_each_task_endpoint_answers_as_the_predictor_does(task, tiny_checkpoint):
    ckpt = tiny_checkpoint(task)
    records = sample_records(task, 3)
    predictor = Predictor.from_checkpoint(ckpt)
    expected = predictor.predict(records)
    with serving(ckpt) as client:
        status, body = client.post(f"/v1/{VERBS[task]}", {"inputs": records})
        assert status == 200, body
        assert body["task"] == task and body["model"] == "tiny"
        assert_same(body["outputs"], expected)

        status, body = client.post("/v1/predict", {"input": records[1]})  # one record: one "output"
        assert status == 200, body
        assert_same([body["output"]], [dict(expected[1], index=0)])

        status, info = client.get("/v1/info")
        endpoint = info["endpoints"][f"/v1/{VERBS[task]}"]
        assert info["task"] == task and endpoint["fields"] == predictor.input_fields()
        assert (endpoint["decoding"] is not None) == (task in GENERATING)

        if endpoint["string_field"]:  # a plain string is a record of the task's one text field
            text = next(iter(records[0].values()))
            status, body = client.post(f"/v1/{VERBS[task]}", {"inputs": [text]})
            assert status == 200, body
            assert_same(body["outputs"], predictor.predict([{endpoint["string_field"]: text}]))

        if task in GENERATING:  # a request's decoding parameters are those of predict
            status, body = client.post(f"/v1/{VERBS[task]}", {"inputs": records, "parameters": {"max_length": 2, "strategy": "greedy"}})
            assert status == 200, body
            predictor.set_generation(max_length=2, strategy="greedy")
            assert_same(body["outputs"], predictor.predict(records))


def test_a_multitask_model_exposes_and_routes_the_verbs_of_its_tasks(tiny_checkpoint):
    ckpt = tiny_checkpoint("multitask", *MULTITASK_TINY)
    predictor = Predictor.from_checkpoint(ckpt)
    with serving(ckpt) as client:
        status, info = client.get("/v1/info")
        assert set(info["tasks"]) == {"translation", "ner", "classification"}
        assert set(info["endpoints"]) == {"/v1/translate", "/v1/tag", "/v1/classify", "/v1/predict"}

        tokens = {"tokens": ["Rosa", "Weller", "scored"]}
        for record in (tokens, "Rosa Weller scored"):  # pre-split words, or raw text (a string)
            status, body = client.post("/v1/tag", {"inputs": [record]})
            assert status == 200 and body["task"] == "ner", body
            expected = predictor.predict([{"task": "ner", **(record if isinstance(record, dict) else {"text": record})}])
            assert_same(body["outputs"], expected)

        records = [{"task": "classification", "text": "a fine film"}, {"task": "translation", "source": "The foxes were slow."}]
        status, body = client.post("/v1/predict", {"inputs": records})
        assert status == 200 and [o["task"] for o in body["outputs"]] == ["classification", "translation"]
        assert_same(body["outputs"], predictor.predict(records))

        status, body = client.post("/v1/translate", {"input": "The foxes were slow.", "parameters": {"max_length": 2}})
        assert status == 200 and body["output"]["task"] == "translation", body
        status, body = client.post("/v1/classify", {"input": {"task": "ner", "text": "x"}})
        assert status == 422 and "POST /v1/predict" in body["error"]
        status, body = client.post("/v1/classify", {"input": "a fine film", "parameters": {"max_length": 2}})
        assert status == 422 and "does not generate" in body["error"]
        status, body = client.post("/v1/answer", {"input": {"question": "?", "context": "."}})
        assert status == 404 and "POST /v1/tag" in body["error"]  # the model has no QA


# ----------------------------------------------------------------------------- limits and errors
SMALL_LIMITS = Limits(max_request_bytes=3000, max_records_per_request=4, max_field_chars=200, max_decode_length=16, max_beam_size=3)
GOOD = {"inputs": [{"source": "The foxes were slow."}]}
BAD_REQUESTS = [  # (what, method, path, JSON body or raw bytes, status, words of the error)
    ("malformed JSON", "POST", "/v1/translate", b'{"inputs": [', 400, "not valid JSON"),
    ("body too large", "POST", "/v1/translate", {"inputs": ["x" * 100] * 40}, 413, "--max_request_bytes"),
    ("too many records", "POST", "/v1/translate", {"inputs": ["a dog"] * 5}, 413, "--max_records_per_request"),
    ("field too long", "POST", "/v1/translate", {"inputs": ["word " * 60]}, 413, "--max_field_chars"),
    ("decoding too long", "POST", "/v1/translate", {**GOOD, "parameters": {"max_length": 17}}, 422, "--max_decode_length"),
    ("beam too wide", "POST", "/v1/translate", {**GOOD, "parameters": {"beam_size": 4}}, 422, "--max_beam_size"),
    ("unknown parameter", "POST", "/v1/translate", {**GOOD, "parameters": {"beams": 2}}, 422, "unknown decoding setting"),
    ("parameter of the wrong type", "POST", "/v1/translate", {**GOOD, "parameters": {"max_length": "5"}}, 422, "max_length is an integer"),
    ("bad parameter value", "POST", "/v1/translate", {**GOOD, "parameters": {"beam_size": 0}}, 422, "beam_size must be >= 1"),
    ("not an object", "POST", "/v1/translate", [{"source": "x"}], 422, "JSON object"),
    ("inputs not a list", "POST", "/v1/translate", {"inputs": {"source": "x"}}, 422, "list of records"),
    ("unknown key", "POST", "/v1/translate", {"inputs": [], "options": {}}, 422, "unknown key(s) ['options']"),
    ("neither input nor inputs", "POST", "/v1/translate", {"parameters": {}}, 422, "exactly one of"),
    ("record not an object", "POST", "/v1/translate", {"inputs": [42]}, 422, "record 1 is a JSON number"),
    ("missing field", "POST", "/v1/translate", {"inputs": [{"source": "a dog"}, {"sauce": "x"}]}, 422, "record 2"),
    ("unknown route", "POST", "/v1/nothing", GOOD, 404, "there is no POST /v1/nothing"),
    ("wrong method", "GET", "/v1/translate", None, 405, "GET /v1/translate is not allowed"),
]


def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(tiny_checkpoint):
    with serving(tiny_checkpoint("translation"), limits=SMALL_LIMITS) as client:
        for what, method, path, body, status, words in BAD_REQUESTS:
            raw = body if isinstance(body, bytes) else None
            got, answer = client.request(method, path, None if raw else body, raw)
            assert got == status and words in answer["error"], f"{what}: {got} {answer}"
            got, answer = client.post("/v1/translate", GOOD)
            assert got == 200 and len(answer["outputs"]) == 1, f"after {what}: {got} {answer}"
        assert client.metric("s2s_http_requests_total", endpoint="/v1/translate", method="POST", status="413") == 3
        assert client.metric("s2s_http_requests_total", endpoint="other", method="POST", status="404") == 1
        status, body = client.post("/v1/translate", {"inputs": []})
        assert status == 200 and body["outputs"] == []


def test_a_classifier_takes_no_decoding_parameters(tiny_checkpoint):
    with serving(tiny_checkpoint("classification")) as client:
        status, body = client.post("/v1/classify", {"input": "a fine film", "parameters": {"beam_size": 2}})
        assert status == 422 and "does not generate text" in body["error"]


# ----------------------------------------------------------------------------- health and metrics
def test_health_and_metrics_count_per_server(tiny_checkpoint):
    ckpt = tiny_checkpoint("classification")
    with serving(ckpt) as client:
        status, body = client.get("/health")
        assert status == 200 and body["status"] == "ok" and body["task"] == "classification"
        ok = {"endpoint": "/v1/classify", "method": "POST", "status": "200"}
        before = client.metric("s2s_http_requests_total", **ok)
        for _ in range(3):
            assert client.post("/v1/classify", {"inputs": ["a fine film", "a bad film"]})[0] == 200
        assert client.metric("s2s_http_requests_total", **ok) == before + 3
        assert client.metric("s2s_records_answered_total", endpoint="/v1/classify") == 6
        assert client.metric("s2s_http_request_duration_seconds_count", endpoint="/v1/classify") == 3
        assert client.metric("s2s_batch_records_sum") == 6
        status, text = client.get("/metrics")
        assert 's2s_model_info{device="cpu",model="tiny",task="classification"} 1.0' in text
        with serving(ckpt) as other:  # a second server in the same process counts for itself
            assert other.metric("s2s_http_requests_total", **ok) == 0
            assert other.post("/v1/classify", {"input": "fine"})[0] == 200
            assert other.metric("s2s_http_requests_total", **ok) == 1
        assert client.metric("s2s_http_requests_total", **ok) == before + 3


# ----------------------------------------------------------------------------- batching
def concurrently(client: Client, path: str, bodies: List[Any]) -> List[Tuple[int, Any]]:
    """POST every body at once (one thread each), the answers in order."""
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: client.post(path, body), bodies))


def test_concurrent_requests_share_a_model_call_and_get_their_own_answers(tiny_checkpoint):
    ckpt = tiny_checkpoint("translation")
    sources = ["The foxes were slow.", "A dog runs.", "My woman always cleans the forest.", "No."]
    predictor = Predictor.from_checkpoint(ckpt)
    # the batch closes when its 4 records are there (the long wait only bounds a broken test)
    with serving(ckpt, batching=Batching(max_batch_records=4, max_wait_ms=10_000)) as client:
        plain = [{"input": s} for s in sources]
        short = [{"input": s, "parameters": {"max_length": 2}} for s in sources]
        answers = concurrently(client, "/v1/translate", plain + short)
        assert all(status == 200 for status, _ in answers), answers
        assert [body["output"]["source"] for _, body in answers] == sources + sources
        assert client.metric("s2s_batch_records_count") == 2  # 8 requests, 2 model calls
        assert client.metric("s2s_batch_records_sum") == 8
        assert client.metric("s2s_batch_requests_bucket", le="2.0") == 0  # never fewer than 4 requests a call
        expected = predictor.predict([{"source": s} for s in sources])
        assert_same([dict(body["output"], index=i) for i, (_, body) in enumerate(answers[:4])], expected)
        predictor.set_generation(max_length=2)  # the other batch: decoded with its own parameters
        expected = predictor.predict([{"source": s} for s in sources])
        assert_same([dict(body["output"], index=i) for i, (_, body) in enumerate(answers[4:])], expected)


def test_a_bad_request_fails_alone_in_its_batch(tiny_checkpoint):
    with serving(tiny_checkpoint("translation"), batching=Batching(max_batch_records=3, max_wait_ms=10_000)) as client:
        good, bad = {"inputs": ["The foxes were slow.", "A dog runs."]}, {"inputs": [{"source": 42}]}  # same fields: same batch
        (good_status, good_body), (bad_status, bad_body) = concurrently(client, "/v1/translate", [good, bad])
        assert client.metric("s2s_batch_requests_sum") == 2 and client.metric("s2s_batch_requests_count") == 1
        assert good_status == 200 and [o["index"] for o in good_body["outputs"]] == [0, 1]
        assert bad_status == 422 and "record 1" in bad_body["error"]


def test_load_of_200_requests_16_at_a_time(tiny_checkpoint):
    sources = [r["text"] for r in sample_records("translation", 20)]
    with serving(tiny_checkpoint("translation")) as client:
        def one(i: int) -> Tuple[float, int, Any]:
            started = time.perf_counter()
            status, body = client.post("/v1/translate", {"input": sources[i % len(sources)]})
            return time.perf_counter() - started, status, body

        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(200)))
        wall = time.perf_counter() - started
        assert [status for _, status, _ in results] == [200] * 200
        assert [body["output"]["source"] for _, _, body in results] == [sources[i % len(sources)] for i in range(200)]
        latencies = sorted(seconds * 1000 for seconds, _, _ in results)
        p50, p95 = statistics.median(latencies), latencies[int(0.95 * len(latencies)) - 1]
        batches = client.metric("s2s_batch_records_count")
        print(f"\nserve load: 200 requests, 16 concurrent: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
              f"{200 / wall:.0f} requests/s, {batches:.0f} model calls ({200 / batches:.1f} records each)")


# ----------------------------------------------------------------------------- the command line
def test_serve_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--ckpt_path", "--port", "--max_request_bytes", "--max_wait_ms", "--quantize", "/v1/translate", "/metrics"):
        assert option in out


@pytest.mark.parametrize("args, words", [
    (["--port", "70000"], "argument --port: must be a TCP port"),
    (["--port", "eighty"], "argument --port: invalid int value"),
    (["--max_wait_ms", "-1"], "argument --max_wait_ms: must be >= 0"),
    (["--max_length", "300"], "argument --max_length: the default 300 is above --max_decode_length 256"),
    (["--quantize", "int4"], "argument --quantize: invalid choice"),
    (["--generation", "length_penalty"], "is not KEY=VALUE"),
    (["--generation", "beams=3"], "unknown decoding setting(s) ['beams']"),
    (["--ckpt_path", "no/such.ckpt"], "argument --ckpt_path: no/such.ckpt does not exist"),
])
def test_bad_serve_options_are_one_paragraph_and_exit_2(args, words, tiny_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--ckpt_path", tiny_checkpoint("translation"), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert words in err and err.startswith("s2s-tasks serve: error:") and "\n" not in err


def test_decoding_options_of_a_model_that_does_not_generate_are_an_error(tiny_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--ckpt_path", tiny_checkpoint("classification"), "--beam_size", "2"])
    assert exit_.value.code == 2 and "does not generate text" in capsys.readouterr().err


def test_the_serve_command_serves_until_interrupted(tiny_checkpoint):
    command = [sys.executable, "-m", "s2s_tasks", "serve", "--ckpt_path", tiny_checkpoint("ner"), "--port", "0",
               "--log_level", "warning", "--max_wait_ms", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = process.stdout.readline()  # printed once the model is loaded and the port bound
        url = re.search(r"http://\S+:\d+", line)
        assert url, (line, process.stderr.read() if process.poll() is not None else "")
        client = Client(url.group(0))
        assert client.get("/health")[0] == 200
        status, body = client.post("/v1/tag", {"input": {"tokens": ["Rosa", "Weller", "scored"]}})
        assert status == 200 and len(body["output"]["tags"]) == 3
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, process.stderr.read()

