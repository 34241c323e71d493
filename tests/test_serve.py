"""`onebit serve` through the official `openai` client.

A server process per configuration on a free port of 127.0.0.1; the answers are compared with the
C runtime called directly (`onebit-run` and `onebit.run.c`): greedy text identical, seeded sampling
reproducible, concurrent streams identical to the same requests alone, bad requests a 4xx with the
API's error body, a full queue a 503, a dropped stream freeing its session.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from onebit.compile.export import ExportOptions, export_1bit  # noqa: E402
from onebit.run.c import Model  # noqa: E402
from onebit.chat_template import ChatTemplate  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("make") is None,
                                reason="the C runtime needs cc and make")

REPO = Path(__file__).resolve().parent.parent
CLI = REPO / "runtime_c" / "build" / "onebit-run"


@pytest.fixture(scope="module")
def model_path(random_checkpoint, tmp_path_factory) -> Path:
    # printable ASCII, so that any text of the tests encodes; random norms and embeddings give varied text
    ckpt = random_checkpoint(randomize=3, vocab_size=96, max_seq_len=128, dim=64, ffn_dim=128,
                             tie_embeddings=False)
    out = tmp_path_factory.mktemp("serve") / "tiny.1bit"
    export_1bit(ckpt, out, ExportOptions())
    return out


class Server:
    """`python -m onebit.run.serve` on a free port; `url` is its address."""

    def __init__(self, model: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "onebit.run.serve", "--model", str(model), "--port", "0",
                                      *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("serving "):
            self.close()
            raise RuntimeError(f"server did not start: {line}{self.proc.stderr.read()}")
        self.url = line.split()[3]

    def client(self, **kw) -> "openai.OpenAI":
        return openai.OpenAI(base_url=self.url + "v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)

    def post(self, path: str, body: bytes | dict, headers: dict | None = None) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(model_path):
    s = Server(model_path, "--parallel", "2", "--max-tokens", "300")
    yield s
    s.close()


@pytest.fixture(scope="module")
def onebit_run() -> Path:
    done = subprocess.run(["make", "-C", str(REPO / "runtime_c"), "all"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return CLI


def test_models_lists_the_file(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_greedy_completion_equals_onebit_run(server, model_path, onebit_run):
    prompt = "ROMEO: What light"
    done = subprocess.run([str(onebit_run), "-m", str(model_path), "-p", prompt, "-n", "60", "--temperature", "0"],
                          capture_output=True, check=True)
    expected = done.stdout.decode()[len(prompt):]
    client = server.client()
    got = client.completions.create(model="tiny", prompt=prompt, max_tokens=60, temperature=0)
    assert got.choices[0].text == expected
    assert got.choices[0].finish_reason == "length"
    assert got.usage.prompt_tokens == len(prompt) and got.usage.completion_tokens == 60
    pieces, finish = [], None
    for chunk in client.completions.create(model="tiny", prompt=prompt, max_tokens=60, temperature=0, stream=True):
        pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == expected and len(pieces) > 10 and finish == "length"


def test_seeded_sampling_is_reproducible_and_matches_the_binding(server, model_path):
    client = server.client()
    ask = dict(model="tiny", prompt="Once", max_tokens=50, temperature=0.9, top_p=0.95, seed=7)
    a = client.completions.create(**ask).choices[0].text
    assert client.completions.create(**ask).choices[0].text == a
    model = Model(model_path)
    assert a == model.decode(model.generate("Once", 50, temperature=0.9, top_p=0.95, seed=7))
    # n choices: choice i is the request with seed + i
    two = client.completions.create(**{**ask, "n": 2})
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].text == a
    assert two.choices[1].text == client.completions.create(**{**ask, "seed": 8}).choices[0].text != a


def test_stop_strings_cut_the_text(server):
    client = server.client()
    full = client.completions.create(model="tiny", prompt="Hello", max_tokens=60, temperature=0).choices[0].text
    stop = full[20:23]
    cut = full.index(stop)
    got = client.completions.create(model="tiny", prompt="Hello", max_tokens=60, temperature=0, stop=[stop, "\x7f"])
    assert got.choices[0].text == full[:cut] and got.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny", prompt="Hello", max_tokens=60, temperature=0, stop=stop,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == full[:cut]


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]


def test_chat_uses_the_template_and_streams_the_same_text(server, model_path):
    client = server.client()
    got = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=40, temperature=0)
    prompt = ChatTemplate().render(MESSAGES)
    model = Model(model_path)
    expected = model.decode(model.generate(prompt, 40, temperature=0))
    cut = expected.find("\nUser:")  # the plain template's stop string
    assert got.choices[0].message.content == (expected if cut < 0 else expected[:cut])
    assert got.choices[0].message.role == "assistant"
    assert got.usage.prompt_tokens == len(model.encode(prompt))
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=40, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == got.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == got.usage.completion_tokens


def test_a_resent_conversation_continues_from_the_cache(server, model_path):
    """A chat resent with one more message evaluates only what is new, and answers what a fresh
    context answers (the same text as the C runtime from scratch)."""
    client = server.client()
    model = Model(model_path)
    messages = [{"role": "user", "content": "Hi."}]
    for turn in range(3):
        got = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0.7,
                                             seed=turn)
        prompt = model.encode(ChatTemplate().render(messages))
        fresh = model.decode(model.generate(prompt, 12, temperature=0.7, seed=turn))
        answer = got.choices[0].message.content
        assert fresh.startswith(answer) and (answer == fresh or got.choices[0].finish_reason == "stop")
        cached = got.usage.prompt_tokens_details.cached_tokens
        assert (cached == 0) if turn == 0 else (len(prompt) // 2 < cached < len(prompt)), (turn, cached)
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": f"Then {turn}?"}]


def test_eight_concurrent_streams_equal_each_alone(server):
    client = server.client()

    def ask(seed: int) -> str:
        stream = client.completions.create(model="tiny", prompt=f"Client {seed}:", max_tokens=80, temperature=0.8,
                                           seed=seed, stream=True)
        return "".join(c.choices[0].text for c in stream)

    alone = [ask(seed) for seed in range(8)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(8)))
    assert together == alone
    assert len(set(alone)) == 8


BAD = [
    (b"{not json", 400, None),
    ({"model": "tiny", "prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": "x", "max_tokens": 301}, 400, "max_tokens"),  # over --max-tokens
    ({"model": "tiny", "prompt": "x", "frobnicate": 1}, 400, "frobnicate"),
    ({"model": "tiny", "prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny", "prompt": "x", "logprobs": 3}, 400, "logprobs"),
    ({"model": "tiny", "prompt": "x" * 129}, 400, "prompt"),  # the context is 128
    ({"model": "tiny", "prompt": "caf\u00e9"}, 400, "prompt"),  # not in the vocabulary
    ({"model": "tiny", "prompt": ""}, 400, "prompt"),
    ({"model": "tiny"}, 400, "prompt"),
    ({"model": "gpt-4", "prompt": "x"}, 404, "model"),
    ({"prompt": "x"}, 400, "model"),
    ([1, 2], 400, None),
]
BAD_CHAT = [
    ({"model": "tiny", "messages": []}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": 3}]}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}, 400, "tools"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x" * 120}]}, 400, "messages"),  # + template > 128
    ({"model": "tiny", "messages": [{"role": "user", "content": "\u00e9"}]}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x", "extra": 1}]}, 400, "messages"),
]


@pytest.mark.parametrize("path,cases", [("v1/completions", BAD), ("v1/chat/completions", BAD_CHAT)])
def test_bad_requests_get_the_api_error(server, path, cases):
    for body, status, param in cases:
        got_status, got = server.post(path, body)
        assert got_status == status, (body, got)
        assert set(got["error"]) == {"message", "type", "param", "code"} and got["error"]["message"]
        assert got["error"]["param"] == param, (body, got)
    status, got = server.post("v1/nowhere", {})
    assert status == 404 and "error" in got
    conn = http.client.HTTPConnection(server.url.split("/")[2])
    conn.putrequest("POST", "/v1/completions")
    conn.putheader("Content-Length", str(9 << 20))  # refused before the body is read
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "larger than" in json.loads(response.read())["error"]["message"]
    conn.close()
    try:
        urllib.request.urlopen(server.url + "v1/completions", timeout=60)
        raise AssertionError("GET of a POST route answered")
    except urllib.error.HTTPError as e:
        assert e.code == 405 and "error" in json.loads(e.read())
    # and the server still answers
    assert server.client().completions.create(model="tiny", prompt="x", max_tokens=2).choices[0].text


def test_full_queue_is_503_and_a_dropped_stream_frees_its_session(model_path):
    server = Server(model_path, "--parallel", "1", "--queue", "0", "--max-tokens", "1000000", "--api-key", "sekrit")
    try:
        assert server.post("v1/completions", {"model": "tiny", "prompt": "x"})[0] == 401
        client = server.client(api_key="sekrit")
        with client.completions.create(model="tiny", prompt="Long:", max_tokens=1000000, temperature=0,
                                       stream=True) as stream:
            next(iter(stream))  # generating: the one session is taken
            with pytest.raises(openai.APIStatusError) as busy:
                client.completions.create(model="tiny", prompt="x", max_tokens=2)
            assert busy.value.status_code == 503
        # the stream is closed: its session comes back long before a million tokens
        deadline = time.monotonic() + 30
        while True:
            try:
                got = client.completions.create(model="tiny", prompt="x", max_tokens=2)
                break
            except openai.APIStatusError as e:
                assert e.status_code == 503 and time.monotonic() < deadline
                time.sleep(0.05)
        assert got.choices[0].finish_reason == "length"
    finally:
        server.close()


@pytest.mark.parametrize("args,message", [(["--host", "0.0.0.0"], "--api-key"),
                                          (["--max-memory", "64K"], "over the memory budget"),
                                          (["--parallel", "0"], "--parallel")])
def test_bad_server_options_are_one_line(model_path, args, message):
    done = subprocess.run([sys.executable, "-m", "onebit.run.serve", "-m", str(model_path), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""


def _page_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium is absent (tools/setup_system.sh installs it)"
    if not (REPO / "examples" / "web" / "node_modules" / "playwright-core").is_dir():
        return "examples/web/node_modules/playwright-core is absent (run examples/web/setup.sh)"
    return None


@pytest.mark.skipif(_page_missing() is not None, reason=_page_missing() or "")
def test_chat_page_in_headless_chromium(server, tmp_path):
    """The page at / streams two answers in a real browser: the same text as the API for the same
    messages (the page's settings from its URL: greedy, 30 tokens)."""
    done = subprocess.run(["node", str(REPO / "tests" / "serve_page.mjs"),
                           server.url + "?temperature=0&max_tokens=30&seed=0", str(tmp_path), "Hello.", "Why?"],
                          capture_output=True, text=True, timeout=180)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and not result["problems"], result
    client = server.client()
    messages = [{"role": "user", "content": "Hello."}]
    expected = []
    for follow_up in ("Why?", None):
        answer = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, temperature=0,
                                                seed=0).choices[0].message.content
        expected.append(answer)
        messages += [{"role": "assistant", "content": answer}] + ([{"role": "user", "content": follow_up}]
                                                                  if follow_up else [])
    assert result["answers"] == expected
    assert result["states"] == ["done", "done"] and result["speed"].endswith("tokens/s")
    assert (tmp_path / "chat_page.png").stat().st_size > 0


def test_terminal_chat_says_what_the_server_says(server, model_path):
    """Two turns of `onebit chat` in a pseudo-terminal, sampled (answer i with seed + i): the same
    text as the server's chat API for the same messages and seeds."""
    pexpect = pytest.importorskip("pexpect")
    client = server.client()
    messages, answers = [], []
    for turn, text in enumerate(["Good morrow.", "What news?"]):
        messages.append({"role": "user", "content": text})
        answer = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, temperature=0.9,
                                                seed=40 + turn).choices[0].message.content
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer})
    child = pexpect.spawn(sys.executable, ["-m", "onebit.run.chat", str(model_path), "-n", "30", "--temperature",
                                           "0.9", "--seed", "40"], encoding="utf-8", timeout=60, dimensions=(50, 500))
    try:
        child.expect_exact("> ")
        for text, answer in zip(["Good morrow.", "What news?"], answers):
            child.sendline(text)
            child.expect_exact(text + "\r\n")
            child.expect_exact(answer.replace("\n", "\r\n") + "\r\n> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_sigterm_ends_running_generations_and_exits(model_path):
    server = Server(model_path, "--max-tokens", "1000000")
    try:
        client = server.client()
        stream = client.completions.create(model="tiny", prompt="Long:", max_tokens=1000000, stream=True)
        chunks = iter(stream)
        next(chunks)  # generating
        server.proc.terminate()
        with pytest.raises(openai.APIError, match="shutting down"):
            for _ in chunks:
                pass
        # it exits long before a million tokens (uvicorn re-raises the signal once shut down)
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        server.close()


@pytest.mark.skipif(_page_missing() is not None, reason=_page_missing() or "")
def test_chat_page_with_an_api_key(model_path, tmp_path):
    """A server with --api-key: the page sends the key given in its settings (here through the URL)."""
    server = Server(model_path, "--api-key", "sekrit")
    try:
        done = subprocess.run(["node", str(REPO / "tests" / "serve_page.mjs"),
                               server.url + "?key=sekrit&temperature=0&max_tokens=10", str(tmp_path), "Hello."],
                              capture_output=True, text=True, timeout=180)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert done.returncode == 0 and not result["problems"], result
        expected = server.client(api_key="sekrit").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hello."}], max_tokens=10, temperature=0)
        assert result["answers"] == [expected.choices[0].message.content]
    finally:
        server.close()
