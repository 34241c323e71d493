"""`onebit chat MODEL`: talk to a `.1bit` model in the terminal, on the C runtime.

The conversation lives in the session's KV-cache: each turn evaluates only what is new (the
template's text for the new message, after the previous answer), not the whole history again.
Past the context the history slides as docs/SAMPLING.md describes: the cache restarts from the
last half of the context (or the new message, if longer). Commands: /reset, /system TEXT,
/save FILE, /quit; Ctrl-C stops the answer being written, Ctrl-D leaves.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Callable, Iterator

import click

from onebit.atomic import atomic_write_text
from onebit.errors import OnebitError, cli_errors
from onebit.run.c import Session, SharedModel
from onebit.chat_template import ChatTemplate, template_for
from onebit.run.textgen import TextGeneration
from onebit.sampling import SamplerConfig


class Conversation:
    """Messages and the session that holds them. `reply()` streams the answer to a new message;
    what was generated stays in the cache for the next turn."""

    def __init__(self, session: Session, template: ChatTemplate, system: str | None = None):
        self.session = session
        self.model = session.model
        self.template = template
        self.messages: list[dict] = []
        self._system = system
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages = [{"role": "system", "content": self._system}] if self._system else []
        self.session.reset()
        self._tokens: list[int] = []  # the sequence: every token fed or sampled since the reset
        self._evaluated = 0  # how many of them went through the model (the rest: the last answer's last token)

    def set_system(self, text: str) -> None:
        """A new system message; the conversation restarts."""
        self._system = text or None
        self.reset()

    def _sequence_text(self) -> str:
        return self.model.decode(self._tokens)

    def reply(self, text: str, max_tokens: int, sampler: SamplerConfig,
              should_stop: Callable[[], bool] | None = None) -> Iterator[str]:
        """Stream the answer to the user message `text`. However it ends (complete, max_tokens,
        `should_stop()` true after a token, or the caller stopping the iteration), what was
        written so far becomes the assistant's message."""
        messages = self.messages + [{"role": "user", "content": text}]
        prompt = self.template.render(messages, add_generation_prompt=True)
        done = self._sequence_text()
        if self._tokens and prompt.startswith(done):
            new = self._tokens[self._evaluated:] + self.model.encode(prompt[len(done):])
        else:  # the template rewrote the history (or a fresh start): evaluate it all
            self.session.reset()
            self._tokens, self._evaluated = [], 0
            new = self.model.encode(prompt)
        n_ctx = self.session.n_ctx
        if len(new) > n_ctx:
            raise OnebitError(f"the message ({len(new)} tokens with the template) is longer than the "
                              f"context of {n_ctx} tokens")
        pending = self._tokens[self._evaluated:]
        self._tokens += new[len(pending):]
        if self.session.pos + len(new) > n_ctx:  # slide: restart the cache from the sequence's tail
            keep = max(n_ctx // 2, len(new))
            self.session.reset()
            new = self._tokens[-keep:]
        self.messages = messages
        tokens = self.session.stream(new, max_tokens, sampler, should_stop)
        gen = TextGeneration(self.model, tokens, max_tokens, self.template.stop, self.template.stop_tokens)
        self._evaluated = len(self._tokens)
        failed = True
        try:
            yield from gen
            failed = False
        except GeneratorExit:  # the caller stopped reading: a normal end
            failed = False
            raise
        finally:
            self._tokens += gen.tokens
            # the last sampled token was never evaluated: the next turn feeds it first
            self._evaluated = len(self._tokens) - (1 if gen.tokens else 0)
            self.messages.append({"role": "assistant", "content": gen.text})
            if failed:  # the cache no longer says what it holds: the next turn evaluates everything
                self._tokens = []

    def save(self, path: Path) -> None:
        """The messages as JSON (the `messages` of an OpenAI chat request)."""
        atomic_write_text(path, json.dumps({"messages": self.messages}, indent=2, ensure_ascii=False) + "\n")


class _CtrlC:
    """While active, Ctrl-C sets a flag (checked between tokens) instead of raising."""

    def __init__(self) -> None:
        self.hit = False

    def __enter__(self) -> "_CtrlC":
        self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, _signum, _frame) -> None:
        self.hit = True

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._old)


HELP = "commands: /reset  /system TEXT  /save FILE  /quit   (Ctrl-C stops an answer, Ctrl-D leaves)"


def run_repl(chat: Conversation, max_tokens: int, sampler: SamplerConfig, read: Callable[[str], str] = input,
             out=sys.stdout) -> None:
    """The read-answer loop of `onebit chat`, until /quit or end of input."""
    print(HELP, file=out, flush=True)
    turn = 0
    while True:
        try:
            line = read("> ")
        except EOFError:
            print(file=out)
            return
        except KeyboardInterrupt:  # at the prompt Ctrl-C clears the line
            print(file=out)
            continue
        command, _, arg = line.strip().partition(" ")
        if command == "/quit":
            return
        if command == "/reset":
            chat.reset()
            print("(conversation reset)", file=out, flush=True)
            continue
        if command == "/system":
            chat.set_system(arg.strip())
            print("(system message set; conversation reset)", file=out, flush=True)
            continue
        if command == "/save":
            if not arg.strip():
                print("error: /save needs a file name", file=out, flush=True)
                continue
            try:
                chat.save(Path(arg.strip()))
                print(f"(saved to {arg.strip()})", file=out, flush=True)
            except OSError as e:
                print(f"error: cannot save: {e}", file=out, flush=True)
            continue
        if command.startswith("/"):
            print(f"error: unknown command {command}; {HELP}", file=out, flush=True)
            continue
        if not line.strip():
            continue
        turn_sampler = SamplerConfig(**{**sampler.__dict__, "seed": sampler.seed + turn})
        turn += 1
        try:
            with _CtrlC() as ctrl_c:
                for piece in chat.reply(line, max_tokens, turn_sampler, should_stop=lambda: ctrl_c.hit):
                    out.write(piece)
                    out.flush()
            print("\n(stopped)" if ctrl_c.hit else "", file=out, flush=True)
        except OnebitError as e:
            print(f"error: {e}", file=out, flush=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_path", type=click.Path(path_type=Path))
@click.option("-n", "--max-tokens", type=int, default=256, show_default=True,
              help="Most tokens per answer (an answer also ends at the template's stop string or end token).")
@click.option("--temperature", type=float, default=0.8, show_default=True, help="Softmax temperature; 0 = greedy.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample among the k most likely tokens; 0 = off.")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling; 1 = off.")
@click.option("--repeat-penalty", type=float, default=1.0, show_default=True, help="Repetition penalty; 1 = off.")
@click.option("--repeat-window", type=int, default=64, show_default=True,
              help="How many recent tokens the repeat penalty looks at.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Sampler seed of the first answer; answer i uses seed + i.")
@click.option("--system", default="", help="System message (the first message of the conversation).  [default: none]")
@click.option("--threads", "-t", type=int, default=1, show_default=True, help="Worker threads of the session.")
@click.option("--ctx", type=int, default=0,
              help="Context length.  [default: min(the model's max_seq_len, 4096)]")
@click.option("--template", "template_file", type=click.Path(path_type=Path), default=None,
              help="A Jinja chat template file to use instead of the model's.  "
                   "[default: the model's, else the plain User:/Assistant: transcript]")
@cli_errors
def main(model_path: Path, max_tokens: int, temperature: float, top_k: int, top_p: float, repeat_penalty: float,
         repeat_window: int, seed: int, system: str, threads: int, ctx: int, template_file: Path | None) -> None:
    """Chat with a .1bit model in the terminal (C runtime)."""
    if max_tokens < 1 or threads < 1 or ctx < 0:
        raise OnebitError("--max-tokens and --threads must be >= 1, --ctx >= 0")
    sampler = SamplerConfig(temperature=temperature, top_k=top_k, top_p=top_p, repeat_penalty=repeat_penalty,
                            repeat_window=repeat_window, seed=seed)
    sampler.validate()
    model = SharedModel(model_path)
    template = template_for(model.metadata())
    if template_file is not None:
        template = ChatTemplate(source=template_file.read_text(encoding="utf-8"), stop=(),
                                stop_tokens=template.stop_tokens, name=str(template_file))
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
    session = model.session(n_ctx=ctx, threads=threads)
    chat = Conversation(session, template, system or None)
    print(f"{model_path.name}: {model.tokenizer_kind} tokenizer, context {session.n_ctx}, "
          f"{template.name} chat template", flush=True)
    run_repl(chat, max_tokens, sampler)


if __name__ == "__main__":
    main()
