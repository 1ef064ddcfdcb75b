"""The fidelity report's shape (``adapters/vN/fidelity.json``) and the gate's decision (``gate.json``).

Plain pydantic models in the store, so the training side that writes them and the serving side that
shows them read one contract. ``gate.json`` is the record of whether a version went live and why: it is
written for every version the runner publishes, also when the evaluation could not be run (then
there is no ``fidelity.json``, and the decision says why).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "FIDELITY_JSON",
    "FIDELITY_MD",
    "FIDELITY_PNG",
    "GATE_JSON",
    "IDENTITY_PNG",
    "GateStatus",
    "SYSTEMS",
    "FidelityReport",
    "GateCheck",
    "GateDecision",
    "IdentityFigures",
    "RealFigures",
    "Sample",
    "SystemFigures",
    "Systems",
    "TurnFigures",
    "read_gate",
    "read_report",
    "write_gate",
]

FIDELITY_JSON = "fidelity.json"
FIDELITY_MD = "fidelity.md"
FIDELITY_PNG = "fidelity.png"
GATE_JSON = "gate.json"
IDENTITY_PNG = "identity.png"

SYSTEMS = ("base", "card", "adapter")
"""The compared systems: base model alone, base + full card (prompt-only persona), adapter as served."""


class SystemFigures(BaseModel):
    """One system's figures; ``None`` where a figure does not apply to it."""

    perplexity: float | None = None
    """Held-out perplexity of the character's real replies. Lower is better."""
    pair_similarity: float | None = None
    """Mean cosine of each generated reply with the real reply to the same prompt. Higher is better."""
    centroid_similarity: float | None = None
    """Mean cosine of generated replies with the real replies' centroid. Higher is better (ceiling: real)."""
    classifier_accuracy: float | None = None
    """Cross-validated accuracy telling its replies from the real ones. 0.5 is best (indistinguishable)."""
    session_variation: float | None = None
    """1 − mean pairwise cosine of replies to one probe across fresh sessions: how much *what is said*
    varies (not who says it; :class:`IdentityFigures` measures that). Lower is steadier."""
    prompt_tokens: float | None = None
    """Prompt tokens of a fresh session's first request (a probe question): what the persona itself costs
    in context. Lower leaves more room for the conversation."""
    marker_rate: float | None = None
    """Share of generated replies with any of the card's voice markers (``None`` when the card has none)."""
    markers: dict[str, float] = Field(default_factory=dict)
    """The share for each voice marker."""
    general_perplexity: float | None = None
    """Perplexity of the base model's own answers to general prompts (forgetting; base and adapter)."""


class Systems(BaseModel):
    base: SystemFigures
    card: SystemFigures
    adapter: SystemFigures


class RealFigures(BaseModel):
    """The character's real held-out replies, as the reference."""

    replies: int
    centroid_ceiling: float | None = None
    """Leave-one-out: each real reply's cosine with the centroid of the others, averaged."""
    marker_rate: float | None = None
    markers: dict[str, float] = Field(default_factory=dict)


class TurnFigures(BaseModel):
    """One system's identity through held-out conversations, turn by turn (or the real replies': the ceiling)."""

    by_turn: list[float]
    """Mean identity at each turn, over the conversations that reach it."""
    drift: float | None = None
    """Mean identity of the last three turns minus the first three (fewer when conversations are short);
    negative: the system leaves the character as the talk goes on. ``None`` with fewer than two turns."""
    in_character: float
    """Share of replies the identity scorer judges the character's."""
    spread: float
    """Standard deviation of the conversations' mean identity: how much the character varies between talks."""
    worst: float
    """The lowest conversation's mean identity."""
    last_prompt_tokens: float | None = None
    """Mean prompt tokens of each conversation's last request: what the persona and the talk cost by then."""
    scenes: list[float] = Field(default_factory=list)
    """Each conversation's mean identity."""

    @property
    def mean(self) -> float:
        return sum(self.by_turn) / len(self.by_turn) if self.by_turn else 0.0


class IdentityFigures(BaseModel):
    """Is this the character speaking? A per-persona scorer's verdicts on each system's replies as it
    talks through held-out conversations with its own history."""

    auc: float
    """The scorer's cross-validated AUC on the training lines (0.5: it cannot tell; 1.0: always right)."""
    threshold: float
    character_lines: int
    other_lines: int
    """Other speakers' lines in the logs and the base model's answers to the same user turns."""
    turns: int
    scenes: int
    systems: dict[str, TurnFigures]
    """``card`` (base model + full card), ``prompt`` (base model + short system prompt), ``adapter``."""
    real: TurnFigures
    """The real replies of the same conversations: the ceiling."""


class Sample(BaseModel):
    """One held-out prompt with the real reply and each system's reply, for reading."""

    prompt: str
    real: str
    base: str
    card: str
    adapter: str


class GateCheck(BaseModel):
    """One comparison the gate made."""

    figure: str
    new: float
    live: float
    limit: float
    """The worst value of ``new`` that still passes."""
    passed: bool


GateStatus = Literal["live", "held back", "unjudged"]
"""``live``: judged and not worse; ``held back``: worse, or its evaluation failed (``error``);
``unjudged``: the persona is too small to judge (too few held-out sessions), so it went live unjudged."""


class GateDecision(BaseModel):
    """Whether a new version may go live, and why not."""

    go_live: bool
    status: GateStatus
    compared_with: str | None = None
    """The live version it was compared with (``None``: there was none)."""
    reasons: list[str] = Field(default_factory=list)
    checks: list[GateCheck] = Field(default_factory=list)
    error: str | None = None
    """Why the evaluation could not be run; the version is then held back (never live unjudged)."""
    missing: list[str] = Field(default_factory=list)
    """Figures the gate could not take, each with the reason (e.g. no server to generate through)."""
    forced: bool = False
    """The decision was overridden (``force``): the version went live whatever the figures said."""
    provisional: bool = False
    """Live on its held-out perplexity alone while the whole report is measured through the server;
    the report's decision replaces this one, and a version it fails is taken back."""
    taken_back: bool = False
    """The version went live on its held-out perplexity and the whole report then held it back: the
    version live before it is live again."""


class FidelityReport(BaseModel):
    """How well one adapter version keeps its character's voice, on the held-out sessions."""

    model_config = ConfigDict(extra="allow")

    persona: str
    version: str
    base_model: str
    data_hash: str
    """Of the examples the report was measured on; reports compare only on equal hashes."""
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    duration_s: float = 0.0
    heldout_sessions: int
    scored_examples: int
    """Held-out examples whose real replies were scored for perplexity."""
    prompts: int
    """Held-out prompts each system answered."""
    probes: list[str]
    sessions: int
    settings: dict[str, Any] = Field(default_factory=dict)
    card_prompt: str
    """The full card the prompt-only persona carried."""
    embedding_model: str
    systems: Systems
    real: RealFigures
    forgetting: float | None = None
    """Relative rise of general-conversation perplexity, adapter over base (0.05 = 5% worse)."""
    samples: list[Sample] = Field(default_factory=list)
    identity: IdentityFigures | None = None
    missing: dict[str, str] = Field(default_factory=dict)
    """Figures that could not be taken on this persona's data, each with the reason."""
    gate: GateDecision | None = None


def read_report(version_path: Path) -> FidelityReport | None:
    """The report written beside a version, or ``None`` when there is none or it cannot be read."""
    path = Path(version_path) / FIDELITY_JSON
    try:
        return FidelityReport.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_gate(version_path: Path, decision: GateDecision) -> Path:
    """Record the gate's decision beside a version (atomically)."""
    from .files import atomic_write

    path = Path(version_path) / GATE_JSON
    atomic_write(path, decision.model_dump_json(indent=2))
    return path


def read_gate(version_path: Path) -> GateDecision | None:
    """The gate's decision on a version, or ``None`` for a version published before it was recorded."""
    path = Path(version_path) / GATE_JSON
    try:
        return GateDecision.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
