"""The subset of the OpenAI API that `onebit serve` speaks: request checking and response bodies.

Requests are checked strictly: a field the API defines but onebit cannot honour with the value
given (logprobs, tools, a penalty other than 0, ...) and a field the API does not define are both
a 400 with the API's error body, never silently ignored. docs/SERVE.md lists the fields.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from onebit.sampling import SamplerConfig

MAX_N = 8  # choices per request
MAX_STOP = 4  # stop strings per request, as the API


class ApiError(Exception):
    """An error answered with `{"error": {...}}` and this HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class GenerationRequest:
    """What both endpoints ask for once checked: the prompts (texts) and how to continue them."""

    model: str
    prompts: list[str]
    max_tokens: int | None
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    stop: list[str] = field(default_factory=list)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    messages: list[dict] | None = None  # chat only


COMMON = {"model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed", "user",
          "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
          "top_k", "repeat_penalty", "repeat_window"}  # the last three: llama.cpp's server extensions
COMPLETION_FIELDS = COMMON | {"prompt", "echo", "suffix", "best_of"}
CHAT_FIELDS = COMMON | {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
                        "response_format", "parallel_tool_calls"}


def _number(body: dict, key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ApiError(400, f"'{key}' must be a number in [{low}, {high}], got {value!r}", key)
    return float(value)


def _integer(body: dict, key: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"'{key}' must be an integer in [{low}, {high}], got {value!r}", key)
    return value


def _unsupported(body: dict, key: str, allowed: tuple = (None,)) -> None:
    if key in body and body[key] not in allowed:
        raise ApiError(400, f"'{key}' = {body[key]!r} is not supported by this server", key)


def _common(body: Any, known: set[str], max_tokens_limit: int) -> GenerationRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - known)
    if unknown:
        raise ApiError(400, f"unrecognized request argument supplied: {', '.join(unknown)}", unknown[0])
    if not isinstance(body.get("model"), str):
        raise ApiError(400, "'model' is required (a string)", "model")
    for key in ("presence_penalty", "frequency_penalty"):
        _unsupported(body, key, (None, 0, 0.0))
    _unsupported(body, "logprobs", (None, False))
    _unsupported(body, "logit_bias", (None, {}))
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise ApiError(400, "'stream_options' may only hold include_usage", "stream_options")
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, f"'stop' must be a non-empty string or a list of up to {MAX_STOP} of them", "stop")
    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbits(63)  # no seed: a different draw each request, as the API
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise ApiError(400, f"'seed' must be an integer, got {seed!r}", "seed")
    sampler = SamplerConfig(temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                            top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
                            top_k=_integer(body, "top_k", 0, 0, 1 << 30),
                            repeat_penalty=_number(body, "repeat_penalty", 1.0, 0.0, 100.0),
                            repeat_window=_integer(body, "repeat_window", 64, 0, 1 << 30),
                            seed=seed % (1 << 64))
    if sampler.top_p == 0.0 or sampler.repeat_penalty == 0.0:
        raise ApiError(400, "'top_p' and 'repeat_penalty' must be > 0", "top_p")
    return GenerationRequest(model=body["model"], prompts=[], stream=bool(stream),
                             include_usage=bool((options or {}).get("include_usage")),
                             max_tokens=_integer(body, "max_tokens", None, 0, max_tokens_limit),
                             n=_integer(body, "n", 1, 1, MAX_N), stop=stop, sampler=sampler)


def parse_completion(body: Any, max_tokens_limit: int) -> GenerationRequest:
    req = _common(body, COMPLETION_FIELDS, max_tokens_limit)
    _unsupported(body, "echo", (None, False))
    _unsupported(body, "suffix", (None, ""))
    _unsupported(body, "best_of", (None, 1))
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts) \
            or len(prompts) * req.n > MAX_N:
        raise ApiError(400, f"'prompt' must be a string or a list of strings (at most {MAX_N} choices in all)",
                       "prompt")
    req.prompts = prompts
    if req.max_tokens is None:
        req.max_tokens = 16  # the API's default for completions
    return req


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise ApiError(400, f"messages[{i}].content: only text parts are supported", "messages")
        return "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts", "messages")
    return content


def parse_chat(body: Any, max_tokens_limit: int) -> GenerationRequest:
    req = _common(body, CHAT_FIELDS, max_tokens_limit)
    for key in ("tools", "tool_choice", "top_logprobs", "parallel_tool_calls"):
        _unsupported(body, key)
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise ApiError(400, "'response_format' other than text is not supported", "response_format")
    if body.get("max_completion_tokens") is not None:
        req.max_tokens = _integer(body, "max_completion_tokens", None, 0, max_tokens_limit)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", "messages")
    checked = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant") \
                or set(m) - {"role", "content", "name"}:
            raise ApiError(400, f"messages[{i}] must be {{role: system|user|assistant, content}}", "messages")
        role = "system" if m["role"] == "developer" else m["role"]
        checked.append({"role": role, "content": _content(m, i)})
    req.messages = checked
    if req.max_tokens is None:
        req.max_tokens = max_tokens_limit
    return req


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict:
    """The usage object; cached_tokens: prompt tokens whose KV-cache entries a session already had."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def now() -> int:
    return int(time.time())
