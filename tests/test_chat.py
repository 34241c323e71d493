"""`onebit chat`: the conversation keeps its history in the KV-cache, answers what the server's
chat API answers for the same messages, and the terminal program works through a pseudo-terminal
(two turns, /save, /system, Ctrl-C stopping an answer but not the program)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from onebit.compile.export import ExportOptions, export_1bit
from onebit.errors import OnebitError
from onebit.run.c import Model, SharedModel
from onebit.run.chat import Conversation
from onebit.chat_template import PLAIN, ChatTemplate, ChatTemplateError, template_for
from onebit.run.textgen import TextGeneration
from onebit.sampling import SamplerConfig

pytestmark = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("make") is None,
                                reason="the C runtime needs cc and make")

# a template of the Llama-3 kind, written with plain-text markers (the test vocabulary has no specials)
TAGGED = ("{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.fixture(scope="module")
def model_path(random_checkpoint, tmp_path_factory) -> Path:
    ckpt = random_checkpoint(randomize=3, vocab_size=96, max_seq_len=256, dim=64, ffn_dim=128,
                             tie_embeddings=False)
    out = tmp_path_factory.mktemp("chat") / "tiny.1bit"
    export_1bit(ckpt, out, ExportOptions())
    return out


def api_answer(model_path: Path, template: ChatTemplate, messages: list[dict], n: int, sampler: SamplerConfig) -> str:
    """What the server computes for a chat request: the whole prompt from an empty context."""
    model = SharedModel(model_path)
    session = model.session()
    tokens = session.stream(model.encode(template.render(messages)), n, sampler)
    gen = TextGeneration(model, tokens, n, template.stop, template.stop_tokens)
    return "".join(gen)


class CountingSession:
    """A session that counts the prompt tokens it is asked to evaluate."""

    def __init__(self, session):
        self._s, self.prefilled = session, 0

    def __getattr__(self, name):
        return getattr(self._s, name)

    def stream(self, prompt, *args):
        self.prefilled += len(prompt)
        return self._s.stream(prompt, *args)


@pytest.mark.parametrize("template", [ChatTemplate(), ChatTemplate(source=TAGGED, stop=("<|end|>",), bos_token="~")],
                         ids=["plain", "tagged"])
def test_turns_continue_the_cache_and_equal_the_api(model_path, template):
    model = SharedModel(model_path)
    session = CountingSession(model.session())
    chat = Conversation(session, template, system="Be brief.")
    sampler = SamplerConfig(temperature=0.8, seed=5)
    history = [{"role": "system", "content": "Be brief."}]
    for turn, text in enumerate(["Hello there.", "And then?", "Bye."]):
        before = session.prefilled
        answer = "".join(chat.reply(text, 30, sampler))
        history.append({"role": "user", "content": text})
        assert answer == api_answer(model_path, template, history, 30, sampler), turn
        history.append({"role": "assistant", "content": answer})
        assert chat.messages == history
        if turn:  # only the new message's text (and the last answer's last token) went through the model
            prompt_tokens = len(model.encode(template.render(history[:-1])))
            assert session.prefilled - before < prompt_tokens // 2


def test_an_answer_stopped_midway_stays_consistent(model_path):
    """Ctrl-C's path: should_stop ends an answer after some tokens; what was shown is the message,
    and the next turn still answers what the API answers for that history."""
    model = SharedModel(model_path)
    chat = Conversation(model.session(), ChatTemplate())
    sampler = SamplerConfig(temperature=0.8, seed=2)
    count = iter(range(1000))
    partial = "".join(chat.reply("Tell me everything.", 500, sampler, should_stop=lambda: next(count) >= 9))
    assert 0 < len(partial) <= 10 and chat.messages[-1] == {"role": "assistant", "content": partial}
    answer = "".join(chat.reply("Go on.", 20, sampler))
    assert answer == api_answer(model_path, ChatTemplate(), chat.messages[:-1], 20, sampler)
    # a message the vocabulary cannot encode changes nothing
    before = list(chat.messages)
    with pytest.raises(OnebitError, match="outside|cannot|not"):
        list(chat.reply("caf\u00e9", 5, sampler))
    assert chat.messages == before
    # an error inside the runtime (here: a sampler it refuses) leaves the next turn correct
    with pytest.raises(OnebitError):
        list(chat.reply("Again.", 5, SamplerConfig(top_p=0.0)))
    answer = "".join(chat.reply("Once more.", 20, sampler))
    assert answer == api_answer(model_path, ChatTemplate(), chat.messages[:-1], 20, sampler)


def test_history_past_the_context_slides(model_path):
    model = SharedModel(model_path)
    chat = Conversation(model.session(n_ctx=48), ChatTemplate())  # the model's context is 256
    for i in range(6):  # about 6 x 40 tokens through a 48-token context
        answer = "".join(chat.reply(f"Turn {i}.", 25, SamplerConfig(temperature=0)))
        assert chat.messages[-1] == {"role": "assistant", "content": answer}
    assert chat.session.pos <= 48
    with pytest.raises(OnebitError, match="longer than the context"):
        list(chat.reply("x" * 60, 5, SamplerConfig()))


def test_stop_strings_are_held_back_until_they_cannot_match(model_path):
    model = SharedModel(model_path)
    ids = model.encode("abc<|en|>def<|end|>ghi")
    gen = TextGeneration(model, iter(ids), 100, stop=["<|end|>"])
    pieces = list(gen)
    assert "".join(pieces) == gen.text == "abc<|en|>def" and gen.finish_reason == "stop"
    assert pieces[:4] == ["a", "b", "c", "<|en|"]  # "<", "<|", "<|e", "<|en" might have begun "<|end|>"
    assert gen.tokens == ids[:len("abc<|en|>def<|end|>")]
    gen = TextGeneration(model, iter(ids[:5]), 5, stop=["c<|x"])
    assert "".join(gen) == "abc<|" and gen.finish_reason == "length"  # the held-back tail comes out at the end
    gen = TextGeneration(model, iter(ids), 100, stop_tokens=[ids[3]])
    assert "".join(gen) == "abc" and gen.finish_reason == "stop"


def test_templates_from_metadata():
    assert template_for({"tokenizer": {"type": "char"}}).source == PLAIN
    t = template_for({"tokenizer": {"chat_template": TAGGED, "special_tokens": {"<|endoftext|>": 7},
                                    "bos_token": "~"}, "chat_stop": ["<|end|>"]})
    assert t.stop == ("<|end|>",) and t.stop_tokens == {7}
    assert t.render([{"role": "user", "content": "hi"}]) == "~<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert template_for({"chat_template": TAGGED}).render([], add_generation_prompt=False) == ""
    # the keys `onebit export` writes for an imported model
    imported = {"tokenizer": {"special_tokens": {"<s>": 1, "</s>": 2}, "bos_token": "<s>", "add_bos_token": True,
                              "eos_token": "</s>", "eos_token_ids": [2, 9], "chat_template": TAGGED}}
    t = template_for(imported)
    assert t.stop_tokens == {1, 2, 9} and t.render([{"role": "user", "content": "x"}]).startswith("<s><|user|>")
    del imported["tokenizer"]["chat_template"]
    assert template_for(imported).render([{"role": "user", "content": "x"}]) == "<s>User: x\nAssistant:"
    imported["tokenizer"]["add_bos_token"] = False
    assert template_for(imported).render([{"role": "user", "content": "x"}]) == "User: x\nAssistant:"
    with pytest.raises(ChatTemplateError, match="template failed: Expected an expression"):
        ChatTemplate(source="{% for %}").render([])
    with pytest.raises(ChatTemplateError, match="no"):
        ChatTemplate(source="{{ raise_exception('no system messages') }}").render([])
    with pytest.raises(ChatTemplateError, match="role"):
        ChatTemplate().render([{"role": "robot", "content": "x"}])
    # the sandbox: no reaching Python internals from a model's template
    with pytest.raises(ChatTemplateError):
        ChatTemplate(source="{{ messages.__class__.__mro__[1].__subclasses__() }}").render([])


def test_terminal_chat_two_turns_save_and_ctrl_c(model_path, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    sampler = SamplerConfig(temperature=0.8, seed=11)
    first = api_answer(model_path, ChatTemplate(), [{"role": "user", "content": "Hello there."}], 40, sampler)
    second = api_answer(model_path, ChatTemplate(), [
        {"role": "user", "content": "Hello there."}, {"role": "assistant", "content": first},
        {"role": "user", "content": "And then?"}], 40, SamplerConfig(temperature=0.8, seed=12))
    child = pexpect.spawn(sys.executable, ["-m", "onebit.run.chat", str(model_path), "-n", "40", "--seed", "11"],
                          encoding="utf-8", timeout=60, dimensions=(50, 500))
    try:
        child.expect_exact("> ")
        for text, answer in [("Hello there.", first), ("And then?", second)]:
            child.sendline(text)
            child.expect_exact(text + "\r\n")  # the terminal's echo
            child.expect_exact(answer.replace("\n", "\r\n") + "\r\n> ")
        saved = tmp_path / "chat.json"
        child.sendline(f"/save {saved}")
        child.expect_exact("(saved to")
        child.expect_exact("> ")
        assert json.loads(saved.read_text())["messages"][-1] == {"role": "assistant", "content": second}
        child.sendline("/system You speak in verse.")
        child.expect_exact("conversation reset)\r\n> ")
        # a long answer, stopped by Ctrl-C: the program stays and the next turn is answered
        child.sendline("/bogus")
        child.expect_exact("unknown command /bogus")
        child.expect_exact("> ")
        child.close(force=True)
        child = pexpect.spawn(sys.executable, ["-m", "onebit.run.chat", str(model_path), "-n", "100000000"],
                              encoding="utf-8", timeout=60)
        child.expect_exact("> ")
        child.sendline("Go on forever.")
        child.expect_exact("Go on forever.\r\n")
        child.expect(r"\S")  # the answer is being written
        child.sendintr()
        child.expect_exact("(stopped)\r\n> ")
        child.sendline("/reset")
        child.expect_exact("(conversation reset)\r\n> ")
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)


def test_chat_cli_reads_a_template_file_and_piped_input(model_path, tmp_path):
    import subprocess

    (tmp_path / "t.jinja").write_text(TAGGED)
    done = subprocess.run([sys.executable, "-m", "onebit.run.chat", str(model_path), "--template",
                           str(tmp_path / "t.jinja"), "-n", "15", "--temperature", "0", "--system", "Hm."],
                          capture_output=True, text=True, input="Hello.\n", timeout=60)
    assert done.returncode == 0, done.stderr
    expected = api_answer(model_path, ChatTemplate(source=TAGGED, stop=()),
                          [{"role": "system", "content": "Hm."}, {"role": "user", "content": "Hello."}], 15,
                          SamplerConfig(temperature=0))
    assert f"> {expected}\n> " in done.stdout


def test_chat_cli_bad_input_is_one_line(model_path, tmp_path):
    import subprocess

    for args in (["nope.1bit"], [str(model_path), "--temperature", "-1"], [str(model_path), "--max-tokens", "0"]):
        done = subprocess.run([sys.executable, "-m", "onebit.run.chat", *args], capture_output=True, text=True,
                              input="", timeout=60)
        assert done.returncode != 0 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr, args
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    Model(model_path)  # the file itself is fine


def test_imported_llama3_template_renders_and_tokenizes_as_transformers(tmp_path):
    """A Hugging Face folder with a Llama-3 chat template, imported and exported: the chat renders
    the prompt as transformers' apply_chat_template does, the C tokenizer gives the same ids
    (specials included), and an answer stops at <|eot_id|> (one of the model's EOS ids)."""
    transformers = pytest.importorskip("transformers")
    from hf_fixtures import llama3_tokenizer, save_hf_bitnet

    from onebit.train.hf_import import import_hf

    folder = save_hf_bitnet(tmp_path / "hf", "latent", tokenizer=llama3_tokenizer())
    import_hf(folder, tmp_path / "ck", show_progress=False)
    export_1bit(tmp_path / "ck", tmp_path / "m.1bit", ExportOptions())
    model = SharedModel(tmp_path / "m.1bit")
    template = template_for(model.metadata())
    assert template.name == "model's"
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Speak, speak."},
                {"role": "assistant", "content": "Resolved."}, {"role": "user", "content": "Wherefore?"}]
    text = template.render(messages)
    assert text == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert model.encode(text) == list(hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                             return_dict=False))
    eot = hf.convert_tokens_to_ids("<|eot_id|>")
    assert eot in template.stop_tokens
    # an answer that samples <|eot_id|> ends there, without it in the text
    gen = TextGeneration(model, iter(model.encode("Resolved.") + [eot, 5, 6]), 50, template.stop,
                         template.stop_tokens)
    assert "".join(gen) == "Resolved." and gen.finish_reason == "stop"
    chat = Conversation(model.session(), template, system="Be brief.")
    answer = "".join(chat.reply("Speak, speak.", 8, SamplerConfig(temperature=0)))
    assert answer == api_answer(tmp_path / "m.1bit", template, chat.messages[:-1], 8, SamplerConfig(temperature=0))
