"""Token ids to text that can be shown as it comes: stop strings, end tokens, finish reasons.

Shared by `onebit chat` and `onebit serve`. Text is released only once it cannot be the start of
a stop string (the held-back tail is released when generation ends any other way), and a
character split across byte-level tokens is released once complete.
"""

from __future__ import annotations

import codecs
from typing import Iterable, Iterator

from onebit.run.c import SharedModel


class TextGeneration:
    """Iterate to get text pieces; afterwards `text` is the answer (stop string excluded),
    `tokens` every id sampled (stop string and end token included), and `finish_reason`
    "stop" (a stop string or end token), "length" (max_tokens) or None (the consumer stopped)."""

    def __init__(self, model: SharedModel, tokens: Iterable[int], max_tokens: int,
                 stop: Iterable[str] = (), stop_tokens: Iterable[int] = ()):
        self._model = model
        self._source = tokens
        self._max_tokens = max_tokens
        self._stop = [s for s in stop if s]
        self._stop_tokens = frozenset(stop_tokens)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._all = ""  # every character decoded so far
        self._released = 0  # how many of them have been given out
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.text = ""

    def _holdback(self) -> int:
        """Length of the longest tail of the text that begins some stop string."""
        best = 0
        for s in self._stop:
            for k in range(min(len(s) - 1, len(self._all)), best, -1):
                if self._all.endswith(s[:k]):
                    best = k
                    break
        return best

    def _release(self, end: int) -> str:
        piece = self._all[self._released:end]
        self._released = max(self._released, end)
        self.text = self._all[:self._released]
        return piece

    def __iter__(self) -> Iterator[str]:
        for token in self._source:
            self.tokens.append(token)
            if token in self._stop_tokens:
                self.finish_reason = "stop"
                break
            self._all += self._utf8.decode(self._model.token_bytes(token))
            # a stop string may begin in the held-back tail: search from there
            start = max(0, self._released - max((len(s) for s in self._stop), default=0))
            hits = [i for i in (self._all.find(s, start) for s in self._stop) if i >= 0]
            if hits:
                self.finish_reason = "stop"
                piece = self._release(min(hits))
                self._all = self._all[:min(hits)]
                if piece:
                    yield piece
                return
            piece = self._release(len(self._all) - self._holdback())
            if piece:
                yield piece
            if len(self.tokens) == self._max_tokens:
                self.finish_reason = "length"
                break
        else:
            if len(self.tokens) == self._max_tokens:
                self.finish_reason = "length"
        if self.finish_reason is None:  # the token source ended early: the caller stopped it
            return
        self._all += self._utf8.decode(b"", final=True)
        piece = self._release(len(self._all))
        if piece:
            yield piece
