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

                env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                    extensions=["jinja2.ext.loopcontrols"])  # as transformers
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


# ----------------------------------------------------------------------------------------------
# What a checkpoint's meta.json gives the `.1bit` metadata, and the pieces the C runtime needs

_PLACEHOLDERS = ("OneBitUserMessage", "onebit user message 2")


def generation_tokens(meta: dict, tokenizer) -> dict:
    """BOS, EOS and the chat template that an imported checkpoint's meta.json carries (from the
    model's tokenizer_config.json / generation_config.json), as the `.1bit` metadata's `tokenizer`
    object holds them; empty for models trained here."""
    out: dict = {}
    bos = meta.get("bos_token_id")
    if isinstance(bos, int) and 0 <= bos < tokenizer.vocab_size:
        out["bos_token_id"] = bos
        out["bos_token"] = tokenizer.token_bytes(bos).decode("utf-8", errors="replace")
        out["add_bos_token"] = bool(meta.get("add_bos_token"))
    eos = [i for i in meta.get("eos_token_ids") or [] if isinstance(i, int) and 0 <= i < tokenizer.vocab_size]
    if eos:
        out["eos_token_ids"] = eos
        out["eos_token"] = tokenizer.token_bytes(eos[0]).decode("utf-8", errors="replace")
    if isinstance(meta.get("chat_template"), str):
        out["chat_template"] = meta["chat_template"]
    return out


def eos_ids(tokenizer_meta: dict) -> frozenset[int]:
    """The ids that end generation: `eos_token_ids` of a `.1bit` metadata `tokenizer` object (or of
    generation_tokens()); none for models trained here, which generate the full count."""
    ids = tokenizer_meta.get("eos_token_ids") or []
    return frozenset(int(i) for i in ids if isinstance(i, int) and not isinstance(i, bool))


def chat_prompt(tokenizer_meta: dict, message: str) -> str:
    """The prompt of `--chat`: the model's own template (not PLAIN) around one user message, with
    the assistant's turn opened."""
    if not isinstance(tokenizer_meta.get("chat_template"), str):
        raise ChatTemplateError("--chat needs the model's chat template, and this model has none "
                                "(models trained by onebit have none; `onebit chat` uses a plain transcript)")
    return template_for({"tokenizer": tokenizer_meta}).render([{"role": "user", "content": message}])


def chat_pieces(tokenizer_meta: dict) -> dict:
    """`chat_prefix`, `chat_suffix` and `chat_trim` for a runtime without Jinja (the C runtime's
    ob_chat_prompt): a one-user-message prompt is prefix + message + suffix, the message stripped
    of surrounding whitespace (Python's str.strip) when chat_trim.

    Rendered from the model's template around placeholders; ChatTemplateError when the template
    has no such form (the text around the message depends on it, or it changes the message other
    than by stripping it)."""
    if not isinstance(tokenizer_meta.get("chat_template"), str):
        raise ChatTemplateError("the model has no chat template")
    template = template_for({"tokenizer": tokenizer_meta})

    def render(content: str) -> str:
        return template.render([{"role": "user", "content": content}], add_generation_prompt=True)

    first, second = _PLACEHOLDERS
    text = render(first)
    if text.count(first) != 1:
        raise ChatTemplateError("the chat template does not place a user message exactly once")
    prefix, suffix = text.split(first)
    if render(second) != prefix + second + suffix:
        raise ChatTemplateError("the text around the user message depends on the message")
    padded = " \n" + first + "\t "
    with_space = render(padded)
    if with_space == prefix + padded + suffix:
        trim = False
    elif with_space == text:
        trim = True
    else:
        raise ChatTemplateError("the chat template changes the user message other than by stripping whitespace")
    return {"chat_prefix": prefix, "chat_suffix": suffix, "chat_trim": trim}
