"""Evaluating one adapter version end to end, and the gate's whole decision for a new version.

    report = evaluate_version(store_settings, "wren", "v3", "http://127.0.0.1:8000/v1")
    report = gate_version(store_settings, "wren", 3, url)   # report.gate.go_live, report.gate.reasons

    evaluation = Evaluation.prepare(store_settings, "wren")  # fails fast: logs, card, held-out split
    number = evaluation.check("v3")                          # fails fast: unknown version, other base
    with served(store_settings) as url:                      # only then start a server
        report = evaluation.evaluate(number, url)

Order of work: generate every reply through the server (all systems at once, so the engine batches),
then score perplexity on the CPU with the base model and the version's PEFT adapter, then embed the
replies and compute the figures, then talk each system through held-out conversations for the
identity figures (:mod:`.identity_report`). A figure the persona's data cannot give is left out with
the reason (``report.missing``); the rest is reported. Reports are written beside the version.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from store.base_model import BaseModel, resolve_base_model
from store.fidelity_report import (
    FidelityReport,
    IdentityFigures,
    RealFigures,
    Sample,
    SystemFigures,
    Systems,
    read_report,
)
from store.names import check_version, version_name
from store.registry import Persona, PersonaStore, check_same_base
from store.settings import StoreSettings

from ..ingest import ExampleSet, persona_examples
from ..server_client import Reply, Sampling, System, generate
from . import metrics
from .card_prompt import example_exchanges, full_card_prompt
from .embed import EMBEDDING_MODEL, Embedder
from .gate import TooSmallToJudge, comparable, decide
from .general import general_conversations
from .identity_report import IDENTITY, identity_figures
from .perplexity import Scorer
from .plan import FIGURES, PERPLEXITY, Plan, make_plan
from .report import write_report
from .settings import FidelityError, FidelitySettings

__all__ = ["Evaluation", "evaluate_version", "gate_version", "settings_for"]

SAMPLES = 3


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def settings_for(persona: Persona) -> FidelitySettings:
    """The persona's evaluation settings: defaults, then its card's ``fidelity:`` section."""
    return FidelitySettings.from_card(persona.card.fidelity, persona.path / "persona.yaml")


@dataclass
class Evaluation:
    """One persona's evaluation, prepared once: examples, plan, full card, base model (and the embedder,
    loaded on first use). Everything that could stop it is checked in :meth:`prepare` and
    :meth:`check`, before a server is started or a reply generated."""

    settings: StoreSettings
    persona: Persona
    fidelity: FidelitySettings
    base: BaseModel
    examples: ExampleSet
    plan: Plan
    card_prompt: str
    say: Callable[[str], None] = _say
    embedder: Embedder | None = None

    @classmethod
    def prepare(
        cls,
        settings: StoreSettings,
        persona: Persona | str,
        fidelity: FidelitySettings | None = None,
        say: Callable[[str], None] = _say,
        examples: ExampleSet | None = None,
    ) -> Evaluation:
        """Read the persona's card, and its logs unless ``examples`` (:func:`training.ingest.persona_examples`)
        are given. Raises :class:`TooSmallToJudge` when its held-out data is too small to judge,
        :class:`FidelityError` or an :class:`training.ingest.IngestError` when it cannot be evaluated."""
        if not isinstance(persona, Persona):
            persona = PersonaStore(settings.personas_dir).get(persona)
        fidelity = fidelity or settings_for(persona)
        examples = examples if examples is not None else persona_examples(persona)
        card_prompt = full_card_prompt(
            persona.title,
            persona.card.description,
            persona.system_prompt,
            example_exchanges(examples.train, fidelity.example_exchanges),
        )
        base = resolve_base_model(settings.base_model, settings.cache_dir, settings.allow_download)
        if not len(examples.heldout):
            raise TooSmallToJudge(
                f"persona '{persona.name}' has no held-out sessions to evaluate on ({examples.sessions} sessions "
                "in its logs; at least 3 are needed, and training.heldout_fraction must be above 0)"
            )
        plan = make_plan(
            examples.heldout,
            persona.card.example_questions,
            prompts=fidelity.heldout_prompts,
            probes=fidelity.probes,
            sessions=fidelity.sessions,
            scored=fidelity.perplexity_examples,
            seed=fidelity.seed,
            fits=_fits(base, card_prompt, fidelity),
        )
        if PERPLEXITY in plan.missing:
            raise TooSmallToJudge(f"persona '{persona.name}': {plan.missing[PERPLEXITY]}, so no version can be judged")
        return cls(settings, persona, fidelity, base, examples, plan, card_prompt, say)

    def check(self, version: int | str | None) -> int:
        """The version's number (``None``: the live one), once it exists and was trained on this base."""
        if version is None:
            if self.persona.live is None:
                raise FidelityError(f"persona '{self.persona.name}' has no live version; name a version")
            version = self.persona.live
        number = check_version(version) if isinstance(version, str) else version
        path = self.persona.version_path(number)
        check_same_base(self.persona.metadata(number), self.base.hash, self.base.id, path)
        return number

    def embed(self, texts: list[str]) -> Any:
        if self.embedder is None:
            self.embedder = Embedder()
        return self.embedder(texts)

    def evaluate(self, version: int | str | None, server_url: str, *, write: bool = True) -> FidelityReport:
        """The report of one version, written beside it unless ``write`` is false."""
        number = self.check(version)
        report = _measure(self, number, server_url)
        if write:
            write_report(report, self.persona.version_path(number))
        return report

    def gate(self, version: int | str, server_url: str) -> FidelityReport:
        """The report of a new version with the gate's decision against the live version in ``report.gate``.

        The live version's stored report is reused when it was measured the same way; otherwise the
        live version is evaluated again (and its report rewritten). Nothing is made live here.
        """
        number = self.check(version)
        report = _measure(self, number, server_url)
        live, live_number = None, self.persona.live
        if live_number is not None and live_number != number:
            live = read_report(self.persona.version_path(live_number))
            if live is None or comparable(report, live) is not None:
                self.say(f"{self.persona.name}: evaluating live {version_name(live_number)} the same way for the gate")
                live = self.evaluate(live_number, server_url)
        report.gate = decide(report, live, self.fidelity.gate)
        write_report(report, self.persona.version_path(number))
        return report


def _fits(base: BaseModel, card_prompt: str, fidelity: FidelitySettings) -> Callable[[Any], bool]:
    """Whether a held-out prompt, carrying the longest system message (the full card), leaves room for a
    reply within ``fidelity.max_length`` tokens: a longer one loses its oldest turns in the plan."""
    from transformers import AutoTokenizer

    from store.chat_format import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    room = fidelity.max_length - fidelity.max_tokens

    def fits(conversation: Any) -> bool:
        messages = [{"role": "system", "content": card_prompt}, *conversation]
        return len(render_prompt(tokenizer, messages)) <= room

    return fits


def _sampling(ctx: Evaluation) -> Sampling:
    card = ctx.persona.card.sampling
    return Sampling(  # what the server uses for a request that sets none, unless fidelity: says otherwise
        temperature=ctx.fidelity.temperature if ctx.fidelity.temperature is not None else card.effective_temperature(),
        top_p=ctx.fidelity.top_p if ctx.fidelity.top_p is not None else card.effective_top_p(),
        max_tokens=ctx.fidelity.max_tokens,
        presence_penalty=card.presence_penalty,
        frequency_penalty=card.frequency_penalty,
    )


def _perplexities(ctx: Evaluation, number: int, general: list) -> dict[str, dict[str, float | None]]:
    """Held-out perplexity for the three systems and general-conversation perplexity before/after."""
    scorer = Scorer.load(
        ctx.base.path,
        ctx.persona.version_path(number),
        max_length=ctx.fidelity.max_length,
        batch_size=ctx.fidelity.batch_size,
    )
    plan = ctx.plan
    out: dict[str, dict[str, float | None]] = {
        "base": {"perplexity": scorer.score(plan.scored_as(None), adapter=False).perplexity},
        "card": {"perplexity": scorer.score(plan.scored_as(ctx.card_prompt), adapter=False).perplexity},
        "adapter": {"perplexity": scorer.score(plan.scored_as(ctx.persona.system_prompt), adapter=True).perplexity},
    }
    for key, adapter in (("base", False), ("adapter", True)):
        out[key]["general_perplexity"] = scorer.score(general, adapter=adapter).perplexity if general else None
    return out


def _style(ctx: Evaluation, replies: list[Reply], real_vectors: Any) -> dict[str, Any]:
    """Style, consistency, context cost and voice markers of one system's replies."""
    plan, markers = ctx.plan, ctx.persona.card.voice_markers
    heldout, probes = replies[: len(plan.prompts)], replies[len(plan.prompts) :]
    rate, per_marker = metrics.marker_rates([r.text for r in replies], markers) if markers and replies else (None, {})
    out: dict[str, Any] = {"marker_rate": rate, "markers": per_marker}
    if heldout:
        vectors = ctx.embed([r.text for r in heldout])
        out["pair_similarity"] = metrics.pair_similarity(vectors, real_vectors)
        out["centroid_similarity"] = metrics.centroid_similarity(vectors, real_vectors)
        out["classifier_accuracy"] = metrics.classifier_accuracy(vectors, real_vectors, seed=ctx.fidelity.seed)
    if probes:
        probe_vectors = ctx.embed([r.text for r in probes])
        n = len(plan.probes)
        groups = [probe_vectors[[s * n + p for s in range(plan.sessions)]] for p in range(n)]
        out["session_variation"] = metrics.session_variation(groups)
        out["prompt_tokens"] = metrics.prompt_tokens_per_request([r.prompt_tokens for r in probes[:n]])
    return out


def _identity(ctx: Evaluation, name: str, server_url: str) -> IdentityFigures | str:
    """Identity turn by turn for the prompt-only persona, the short prompt and the adapter as served."""
    persona = ctx.persona
    return identity_figures(
        url=server_url,
        train_rows=ctx.examples.train,
        heldout_rows=ctx.examples.heldout,
        systems=[
            System("card", ctx.base.id, ctx.card_prompt),
            System("prompt", ctx.base.id, persona.system_prompt),
            System("adapter", f"{persona.name}@{name}"),
        ],
        generic=System("base", ctx.base.id),
        sampling=_sampling(ctx),
        fidelity=ctx.fidelity,
        embed=ctx.embed,
        say=lambda message: ctx.say(f"{persona.name} {name}: {message}"),
    )


def _measure(ctx: Evaluation, number: int, server_url: str) -> FidelityReport:
    """Generate, score, embed and compute every figure of one (checked) version."""
    started = time.perf_counter()
    persona, plan, name = ctx.persona, ctx.plan, version_name(number)
    systems = [
        System("base", ctx.base.id),
        System("card", ctx.base.id, ctx.card_prompt),
        System("adapter", f"{persona.name}@{name}"),
    ]
    ctx.say(
        f"{persona.name} {name}: {len(plan.prompts)} held-out prompts and {len(plan.probes)} probes x "
        f"{plan.sessions} sessions for each of {len(systems)} systems through {server_url}"
    )
    replies = generate(server_url, plan.jobs(systems), _sampling(ctx), concurrency=ctx.fidelity.concurrency)
    general = general_conversations(
        ctx.settings.cache_dir, ctx.base.id, ctx.base.hash, server_url, concurrency=ctx.fidelity.concurrency
    )
    ctx.say(
        f"{persona.name} {name}: replies in {time.perf_counter() - started:.0f} s; scoring "
        f"{len(plan.scored)} real replies and {len(general)} general answers"
    )
    figures = _perplexities(ctx, number, general)
    ctx.say(
        f"{persona.name} {name}: scored at {time.perf_counter() - started:.0f} s; embedding replies with "
        f"{EMBEDDING_MODEL}"
    )
    real_texts = [p.real for p in plan.prompts]
    real_vectors = ctx.embed(real_texts)
    missing = {figure: why for part, why in plan.missing.items() for figure in FIGURES[part]}
    markers = ctx.persona.card.voice_markers
    real_rate, real_markers = metrics.marker_rates(real_texts, markers) if markers else (None, {})
    by_key = {s.key: r for s, r in zip(systems, replies)}
    for key, system_replies in by_key.items():
        figures[key].update(_style(ctx, system_replies, real_vectors))
    base_general, adapter_general = figures["base"]["general_perplexity"], figures["adapter"]["general_perplexity"]
    samples = [
        Sample(
            prompt=prompt.conversation[-1]["content"], real=prompt.real, **{key: by_key[key][i].text for key in by_key}
        )
        for i, prompt in enumerate(plan.prompts[:SAMPLES])
    ]
    identity = _identity(ctx, name, server_url)
    if isinstance(identity, str):
        missing[IDENTITY], identity = identity, None
    return FidelityReport(
        persona=persona.name,
        version=name,
        base_model=ctx.base.id,
        data_hash=ctx.examples.data_hash,
        duration_s=round(time.perf_counter() - started, 1),
        heldout_sessions=len(ctx.examples.heldout_sessions),
        scored_examples=len(plan.scored),
        prompts=len(plan.prompts),
        probes=plan.probes,
        sessions=plan.sessions,
        settings=ctx.fidelity.model_dump(),
        card_prompt=ctx.card_prompt,
        embedding_model=EMBEDDING_MODEL,
        systems=Systems(**{key: SystemFigures(**values) for key, values in figures.items()}),
        real=RealFigures(
            replies=len(real_texts),
            centroid_ceiling=metrics.leave_one_out_ceiling(real_vectors) if len(real_texts) >= 2 else None,
            marker_rate=real_rate,
            markers=real_markers,
        ),
        forgetting=(adapter_general / base_general - 1.0) if base_general and adapter_general else None,
        samples=samples,
        identity=identity,
        missing=missing,
    )


def evaluate_version(
    settings: StoreSettings,
    persona: Persona | str,
    version: int | str | None,
    server_url: str,
    *,
    fidelity: FidelitySettings | None = None,
    write: bool = True,
    say: Callable[[str], None] = _say,
) -> FidelityReport:
    """The fidelity report of one version (``None``: the live one), measured through the server at
    ``server_url`` (``http://host:port/v1``), written beside the version unless ``write`` is false.

    Raises :class:`FidelityError` or a :class:`store.errors.StoreError` naming what is wrong.
    """
    return Evaluation.prepare(settings, persona, fidelity, say).evaluate(version, server_url, write=write)


def gate_version(
    settings: StoreSettings,
    persona: Persona | str,
    version: int | str,
    server_url: str,
    *,
    fidelity: FidelitySettings | None = None,
    say: Callable[[str], None] = _say,
) -> FidelityReport:
    """Evaluate a new version and decide whether it may go live (:meth:`Evaluation.gate`); the publish
    path acts on ``report.gate.go_live``."""
    return Evaluation.prepare(settings, persona, fidelity, say).gate(version, server_url)
