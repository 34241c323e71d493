"""Chat templates: a conversation (a list of {role, content} messages) rendered as the prompt text.

A model may carry its own template in its `.1bit` metadata as a Jinja string, the convention of
Hugging Face's `tokenizer_config.json` `chat_template` (variables `messages`,
`add_generation_prompt`, `bos_token`, `eos_token`; rendered in Jinja's sandbox). Models without one,
such as the char-level models trained here, get `PLAIN`: a transcript of `User:` and `Assistant:`
lines, which any text model can continue, stopped where it starts the user's next line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from onebit.errors import OnebitError

ROLES = ("system", "user", "assistant")

# The plain-text fallback. The generation prompt ends where the answer starts ("Assistant:"), and
# an answer renders as exactly the text generated, then "\n": the transcript the model produced,
# up to its stop string "\nUser:", stays a prefix of the next turn's prompt, so a chat continues
# from its KV-cache instead of prefilling the whole history again.
PLAIN = (
    "{% for m in messages %}"
    "{% if m.role == 'system' %}{{ m.content }}\n\n"
    "{% elif m.role == 'user' %}User: {{ m.content }}\n"
    "{% else %}Assistant:{{ m.content }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
PLAIN_STOP = ("\nUser:",)


class ChatTemplateError(OnebitError):
    """A template that does not render, or messages it cannot take."""


@dataclass
class ChatTemplate:
    """A Jinja chat template, the stop strings that end an answer, and the tokens that do."""

    source: str = PLAIN
    stop: tuple[str, ...] = PLAIN_STOP
    stop_tokens: frozenset[int] = frozenset()
    bos_token: str = ""
    eos_token: str = ""
    name: str = "plain"
    _compiled: object = field(default=None, init=False, repr=False, compare=False)

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text of these messages (each a dict with `role` and `content`)."""
        for m in messages:
            if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise ChatTemplateError(f"a message needs a role in {ROLES} and a string content, got {m!r}")
        from jinja2 import TemplateError

        try:
            if self._compiled is None:
                from jinja2.sandbox import ImmutableSandboxedEnvironment

                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
                env.globals["raise_exception"] = _raise
                self._compiled = env.from_string(self.source)
            return self._compiled.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        except TemplateError as e:
            raise ChatTemplateError(f"the {self.name} chat template failed: {e}") from None


def _raise(message: str) -> None:
    raise ChatTemplateError(message)


def template_for(metadata: dict) -> ChatTemplate:
    """The model's template from its `.1bit` metadata, or PLAIN. Looked up as `chat_template` at
    the top level or inside `tokenizer`; the tokenizer's special tokens end an answer either way."""
    tok = metadata.get("tokenizer") or {}
    special = tok.get("special_tokens") or {}
    ids = special.values() if isinstance(special, dict) else []
    stop_tokens = frozenset(int(i) for i in ids if isinstance(i, int))
    source = metadata.get("chat_template") or tok.get("chat_template")
    if not source:
        return ChatTemplate(stop_tokens=stop_tokens)
    if not isinstance(source, str):
        raise ChatTemplateError("the model's chat_template is not a string")
    stop = metadata.get("chat_stop") or tok.get("chat_stop") or ()
    return ChatTemplate(source=source, stop=tuple(stop), stop_tokens=stop_tokens,
                        bos_token=str(tok.get("bos_token") or ""), eos_token=str(tok.get("eos_token") or ""),
                        name="model's")
