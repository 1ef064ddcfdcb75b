"""Automatic rejection of generated examples that are obviously unusable, with the reason kept.

The rules are the ones self-instruct style generators use (Alpaca's drops near-copies by ROUGE-L):
empty, repeated, a near-copy of a real example, out of character, the wrong speaker.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NEAR_COPY_ROUGE_L = 0.7
"""ROUGE-L F-measure against a real line above which a generated line counts as a copy of it."""

OUT_OF_CHARACTER = re.compile(
    r"\b(as an ai|an ai (language )?model|a language model|i am an ai|i'm an ai|i am an assistant|"
    r"i'm an assistant|ai assistant|smollm|hugging ?face|openai|chatgpt|as a large language)\b",
    re.IGNORECASE,
)
_SPEAKER_PREFIX = re.compile(r"^\s*\*{0,2}([A-Z][\w .'-]{0,30}|user|assistant|you|me)\*{0,2}\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    prompt: str
    reply: str


class Rules:
    """Checks one batch against the persona's real lines and everything generated before."""

    def __init__(self, real_lines: Iterable[str], character_names: Sequence[str], seen: Iterable[str] = ()) -> None:
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.real = [line for line in real_lines if line.strip()]
        self.names = {n.casefold() for n in character_names}
        self.seen = {self._key(text) for text in seen}

    @staticmethod
    def _key(text: str) -> str:
        return " ".join(re.findall(r"\w+", text.casefold()))

    def _near_copy(self, text: str) -> str | None:
        for real in self.real:
            if self._scorer.score(real, text)["rougeL"].fmeasure > NEAR_COPY_ROUGE_L:
                return real
        return None

    def reason(self, candidate: Candidate) -> str | None:
        """Why ``candidate`` is rejected, or None to keep it for review (it is then remembered)."""
        prompt, reply = candidate.prompt.strip(), candidate.reply.strip()
        if not prompt or not reply:
            return "empty"
        if OUT_OF_CHARACTER.search(reply) or OUT_OF_CHARACTER.search(prompt):
            return f"out of character: {OUT_OF_CHARACTER.search(reply + ' ' + prompt).group(0)!r}"
        speaker = _SPEAKER_PREFIX.match(reply)
        if speaker and speaker.group(1).strip().casefold() not in self.names:
            return f"wrong speaker: the reply starts as {speaker.group(1).strip()!r}"
        if "\nuser:" in reply.casefold() or "\nyou:" in reply.casefold():
            return "wrong speaker: the reply goes on as the other side"
        key = self._key(reply)
        if key in self.seen:
            return "repeated"
        copied = self._near_copy(reply)
        if copied is not None:
            return f"near-copy of a real line (ROUGE-L > {NEAR_COPY_ROUGE_L}): {copied[:60]!r}"
        self.seen.add(key)
        return None
