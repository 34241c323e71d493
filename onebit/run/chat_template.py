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

# The plain-text fallback (after the BOS token of a model that asks for one). The generation prompt
# ends where the answer starts ("Assistant:"), and
# an answer renders as exactly the text generated, then "\n": the transcript the model produced,
# up to its stop string "\nUser:", stays a prefix of the next turn's prompt, so a chat continues
# from its KV-cache instead of prefilling the whole history again.
PLAIN = (
    "{{ bos_token }}{% for m in messages %}"
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
    """The model's template from its `.1bit` metadata, or PLAIN.

    Read from the `tokenizer` object as `onebit export` writes it for an imported model
    (`chat_template`, `bos_token`, `add_bos_token`, `eos_token`, `eos_token_ids`; a top-level
    `chat_template` is accepted too). Every special token and every EOS id ends an answer. A model's
    template places BOS itself (`{{ bos_token }}`, as Hugging Face renders it); PLAIN starts with
    it when the model has `add_bos_token`."""
    tok = metadata.get("tokenizer") or {}
    special = tok.get("special_tokens") or {}
    ids = list(special.values()) if isinstance(special, dict) else []
    ids += tok.get("eos_token_ids") or []
    stop_tokens = frozenset(int(i) for i in ids if isinstance(i, int) and not isinstance(i, bool))
    bos = str(tok.get("bos_token") or "")
    eos = str(tok.get("eos_token") or "")
    source = tok.get("chat_template") or metadata.get("chat_template")
    if not source:
        return ChatTemplate(stop_tokens=stop_tokens, bos_token=bos if tok.get("add_bos_token") else "",
                            eos_token=eos)
    if not isinstance(source, str):
        raise ChatTemplateError("the model's chat_template is not a string")
    stop = tok.get("chat_stop") or metadata.get("chat_stop") or ()
    return ChatTemplate(source=source, stop=tuple(stop), stop_tokens=stop_tokens, bos_token=bos, eos_token=eos,
                        name="model's")
