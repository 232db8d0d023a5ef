"""Prompt formats and reasoning blocks: pure functions shared by the engine, the GUI and the CLI.

A loaded model talks in one of three formats (``LoadedInfo.chat_format``):

- ``"gguf"``: the chat template stored in the file (``tokenizer.chat_template``);
- ``"builtin:NAME"``: the file has none, but its metadata names a family llama.cpp ships a template
  for (``llama_chat_builtin_templates``), e.g. ``builtin:gemma``;
- ``"completion"``: a base model: the text continues the prompt, with no roles at all.  A made-up
  ``user:``/``assistant:`` transcript would only teach a base model to write role labels.

Reasoning models write their thinking between ``<think>`` and ``</think>``;
:class:`ReasoningSplitter` separates it from the answer while the reply streams.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

GGUF = "gguf"
COMPLETION = "completion"
BUILTIN_PREFIX = "builtin:"

# general.architecture -> llama.cpp's built-in template name, where the architecture alone says it.
_BY_ARCH = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "qwen": "chatml",
    "qwen2": "chatml",
    "qwen2moe": "chatml",
    "qwen3": "chatml",
    "qwen3moe": "chatml",
    "command-r": "command-r",
    "cohere2": "command-r",
    "chatglm": "chatglm4",
    "exaone": "exaone3",
    "exaone4": "exaone4",
    "granite": "granite",
    "granitemoe": "granite",
    "llama4": "llama4",
    "minicpm": "minicpm",
    "deepseek2": "deepseek2",
    "phi3": "phi3",
    "orion": "orion",
    "openai-moe": "gpt-oss",
}
# Name keywords (general.name / basename / finetune, lower case) for architectures shared by many
# families (``llama`` is used by Llama 2/3, Mistral, TinyLlama, Falcon3, SmolLM ...).  First match wins.
_BY_NAME = (
    ("llama-4", "llama4"),
    ("llama-3", "llama3"),
    ("llama3", "llama3"),
    ("llama-2", "llama2"),
    ("llama2", "llama2"),
    ("mixtral", "mistral-v1"),
    ("mistral", "mistral-v1"),
    ("phi-4", "phi4"),
    ("phi4", "phi4"),
    ("zephyr", "zephyr"),
    ("tinyllama", "zephyr"),
    ("vicuna", "vicuna"),
    ("openchat", "openchat"),
    ("falcon3", "falcon3"),
    ("smollm", "chatml"),
    ("qwen", "chatml"),
    ("gemma", "gemma"),
    ("deepseek", "deepseek"),
)
# tokenizer.ggml.pre values that belong to exactly one family's chat format.
_BY_PRE = {"llama-bpe": "llama3", "tekken": "mistral-v7-tekken"}


def builtin_for(metadata: Mapping[str, object]) -> str | None:
    """The built-in template for the model's family, or None when the metadata does not say."""
    arch = str(metadata.get("general.architecture", "")).lower()
    if arch in _BY_ARCH:
        return _BY_ARCH[arch]
    names = " ".join(
        str(metadata.get(k, "")) for k in ("general.name", "general.basename", "general.finetune")
    ).lower()
    for word, name in _BY_NAME:
        if word in names:
            return name
    return _BY_PRE.get(str(metadata.get("tokenizer.ggml.pre", "")).lower())


def parse_format(value: str | None) -> str | None:
    """Check a format a caller forces (None or "auto": choose); raises ValueError when malformed."""
    if value is None or value == "auto":
        return None
    if value in (GGUF, COMPLETION):
        return value
    if value.startswith(BUILTIN_PREFIX) and len(value) > len(BUILTIN_PREFIX):
        return value
    raise ValueError(
        f"unknown chat format {value!r}: use auto, gguf, completion or builtin:NAME (e.g. builtin:chatml)"
    )


def choose_format(
    forced: str | None, has_template: bool, metadata: Mapping[str, object], builtins: set[str]
) -> str:
    """The format a load uses: ``forced`` when given (and possible), else the best one available."""
    forced = parse_format(forced)
    if forced == GGUF and not has_template:
        raise ValueError("the file has no chat template (tokenizer.chat_template)")
    if forced is not None and forced.startswith(BUILTIN_PREFIX):
        name = forced[len(BUILTIN_PREFIX) :]
        if name not in builtins:
            raise ValueError(
                f"llama.cpp has no built-in chat template {name!r}; known: {', '.join(sorted(builtins))}"
            )
    if forced is not None:
        return forced
    if has_template:
        return GGUF
    family = builtin_for(metadata)
    return BUILTIN_PREFIX + family if family is not None and family in builtins else COMPLETION


def completion_prompt(messages: list[dict[str, str]]) -> str:
    """A conversation as plain text for a base model: no roles, each reply continues the text.

    The system prompt (if any) comes first as a preface; the rest is the messages' text joined as
    written, so a reply the model gave continues exactly where the prompt stopped.
    """
    system = [m["content"] for m in messages if m.get("role") == "system"]
    rest = "".join(m["content"] for m in messages if m.get("role") != "system")
    head = "\n\n".join(s for s in system if s)
    return f"{head}\n\n{rest}" if head and rest else head or rest


def turn_stops(rendered_turns: str, reply: str, next_user: str) -> list[str]:
    """Stop strings from a rendered ``[user, assistant=reply, user=next_user]`` conversation.

    What the format puts between the end of an assistant reply and the next user message (chatml's
    ``<|im_end|>``, gemma's ``<end_of_turn>``) is what the model writes when its turn is over; the
    model's end-of-generation tokens usually catch it, but a file whose vocabulary lacks them (a
    built-in template on a model it was not made for) would otherwise print the next role label.
    """
    i, j = rendered_turns.find(reply), rendered_turns.find(next_user)
    if i < 0 or j < 0 or j <= i:
        return []
    sep = rendered_turns[i + len(reply) : j].strip()
    if not sep:
        return []
    first = sep.splitlines()[0].strip()
    return list(dict.fromkeys(s for s in (first, sep) if s))


# ---- reasoning ------------------------------------------------------------------------------

OPEN, CLOSE = "<think>", "</think>"
Kind = Literal["reasoning", "answer"]


@dataclass(frozen=True)
class Part:
    """A piece of a streamed reply: ``kind`` is "reasoning" (inside <think>) or "answer"."""

    kind: Kind
    text: str


class ReasoningSplitter:
    """Split streamed text into reasoning and answer parts as the pieces arrive.

    Feed the pieces as they stream (:meth:`feed`), then call :meth:`finish`.  A tag split across
    pieces (``"<th"`` + ``"ink>"``) is held back until it is complete, so no part ever shows half a
    tag.  ``in_reasoning`` starts inside a block: templates such as Qwen3's and DeepSeek-R1's put
    ``<think>`` at the end of the prompt, and the reply then holds only the closing tag.
    """

    def __init__(self, in_reasoning: bool = False) -> None:
        self.in_reasoning = in_reasoning
        self.seen_reasoning = in_reasoning
        self._held = ""
        self._strip = in_reasoning

    def feed(self, piece: str) -> list[Part]:
        """The parts ``piece`` completes (possibly none while a tag may be starting)."""
        text = self._held + piece
        self._held = ""
        out: list[Part] = []
        while text:
            tag = CLOSE if self.in_reasoning else OPEN
            i = text.find(tag)
            if i >= 0:
                self._emit(out, text[:i])
                text = text[i + len(tag) :]
                self.in_reasoning = not self.in_reasoning
                self.seen_reasoning = True
                self._strip = True  # the newlines right after a tag are layout, not content
                continue
            keep = _partial_suffix(text, tag)
            self._emit(out, text[: len(text) - keep])
            self._held = text[len(text) - keep :]
            break
        return out

    def finish(self) -> list[Part]:
        """Whatever is still held back (an unfinished tag is text after all)."""
        out: list[Part] = []
        self._emit(out, self._held)
        self._held = ""
        return out

    def _emit(self, out: list[Part], text: str) -> None:
        if self._strip:
            text = text.lstrip("\n")
            self._strip = not text
        if not text:
            return
        kind: Kind = "reasoning" if self.in_reasoning else "answer"
        if out and out[-1].kind == kind:
            out[-1] = Part(kind, out[-1].text + text)
        else:
            out.append(Part(kind, text))


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


def split_reasoning(text: str, in_reasoning: bool = False) -> tuple[str, str]:
    """(reasoning, answer) of a whole reply; earlier turns keep only the answer in the history."""
    sp = ReasoningSplitter(in_reasoning)
    parts = sp.feed(text) + sp.finish()
    reasoning = "".join(p.text for p in parts if p.kind == "reasoning")
    answer = "".join(p.text for p in parts if p.kind == "answer")
    return reasoning.strip("\n"), answer


def prompt_opens_reasoning(prompt: str) -> bool:
    """Whether a rendered prompt ends inside a ``<think>`` block (the reply starts thinking)."""
    tail = prompt.rstrip()
    return bool(re.search(r"<think>\s*$", tail)) and tail.rfind(OPEN) > tail.rfind(CLOSE)
