"""Does training give the character its voice? One persona, trained with the defaults, measured.

Run by hand: ``.venv/bin/python bench/persona_eval.py wren`` trains a copy of the persona with the
defaults (several minutes; ``--personas-dir`` trains one kept elsewhere, ``--set whole_sessions=true
--set epochs=6`` tries other settings, written into the copy's ``persona.yaml`` ``training:``, and
``--card system_prompt=...`` changes a field of the copy's card), starts ``persona serve`` on it and
writes the version's fidelity report (:mod:`training.fidelity`: held-out perplexity, style
similarity, identity turn by turn, prompt tokens, voice markers, forgetting; base model vs
prompt-only persona with the full card vs adapter). ``--no-train`` measures the live version of the
persona in ``personas/`` (or in ``--personas-dir``) instead. Appends the training wall time and the
report's figures to ``bench/RESULTS.md`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import RESULTS, append_section  # noqa: E402


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each value read as YAML (``true``, ``3``, ``1e-3``, ``[q_proj, v_proj]``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"{item!r}: expected KEY=VALUE, e.g. --set epochs=3")
        out[key.strip()] = yaml.safe_load(value)
    return out


def copy_persona(
    name: str, source: Path, overrides: dict[str, Any], card_fields: dict[str, Any], adapters: bool
) -> Path:
    """A personas folder holding a copy of ``source/<name>`` (its adapters only when ``adapters``),
    with ``overrides`` in its card's ``training:`` and ``card_fields`` replacing fields of the card."""
    root = Path(tempfile.mkdtemp(prefix="persona-eval-")) / "personas"
    ignore = None if adapters else shutil.ignore_patterns("adapters")
    shutil.copytree(source / name, root / name, ignore=ignore)
    if overrides or card_fields:
        card_file = root / name / "persona.yaml"
        card = yaml.safe_load(card_file.read_text(encoding="utf-8")) if card_file.exists() else {}
        card = card or {}
        card = {**card, **card_fields, "training": {**(card.get("training") or {}), **overrides}}
        card_file.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return root


def train_copy(
    name: str, source: Path, env: dict[str, str], overrides: dict[str, Any], card_fields: dict[str, Any]
) -> tuple[Path, float]:
    """A copy of ``source/<name>`` (no adapters) trained with the defaults and the changes of
    :func:`copy_persona`; its folder and wall time."""
    root = copy_persona(name, source, overrides, card_fields, adapters=False)
    changed = {**overrides, **card_fields}
    print(f"training {name} with the defaults{' and ' + str(changed) if changed else ''} in {root}", flush=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cli.main", "train", name, "--personas-dir", str(root)], cwd=REPO, env=env, check=True
    )
    return root, time.perf_counter() - started


def preference_line(figures: dict[str, Any] | None) -> list[str]:
    """The preference stage's figures, when the version had one."""
    if not figures:
        return []
    after = figures.get("eval_loss_after")
    return [
        "",
        f"Preference stage: {figures.get('pairs')} pairs against the {figures.get('rejected')} voice, "
        f"{figures.get('steps')} steps in {figures.get('seconds')} s (beta {figures.get('beta')}, the real "
        f"reply's own loss at weight {figures.get('sft_weight', 0)}), "
        f"margin {figures.get('margin')}, accuracy {figures.get('accuracy')}, held-out loss after it "
        f"{'n/a' if after is None else f'{after:.4f}'}.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("persona")
    parser.add_argument("--no-train", action="store_true", help="measure the live version, trained before")
    parser.add_argument(
        "--personas-dir", type=Path, default=REPO / "personas",
        help="where the persona is: the folder whose copy is trained, or with --no-train the one measured",
    )  # fmt: skip
    parser.add_argument("--server", help="a running server's API root serving the personas folder")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="a training setting for this trial (repeatable), as in persona.yaml's training:",
    )  # fmt: skip
    parser.add_argument(
        "--card", dest="card_fields", action="append", default=[], metavar="KEY=VALUE",
        help="a field of the copy's persona.yaml for this trial (repeatable), e.g. system_prompt=... or "
        "(with --no-train, on a copy with its versions) fidelity={temperature: 0.5}",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from store.registry import PersonaStore
    from store.settings import StoreSettings
    from training.fidelity import evaluate_version, served
    from training.fidelity.report import figure_table, identity_lines

    cache = Path(os.environ.get("PERSONA_CACHE_DIR", REPO / ".cache"))
    env = {**os.environ, "PERSONA_CACHE_DIR": str(cache)}
    if args.no_train and args.card_fields:  # e.g. other sampling for the report: measured on a copy
        root, trained_s = copy_persona(args.persona, args.personas_dir, {}, parse_sets(args.card_fields), True), None
    elif args.no_train:
        root, trained_s = args.personas_dir, None
    else:
        root, trained_s = train_copy(
            args.persona, args.personas_dir, env, parse_sets(args.sets), parse_sets(args.card_fields)
        )
    settings = StoreSettings(personas_dir=root, cache_dir=cache)
    persona = PersonaStore(root).get(args.persona)
    if persona.live is None:
        sys.exit(f"{args.persona} has no live version in {root}")
    meta = persona.metadata(persona.live)
    with served(settings) if args.server is None else contextlib.nullcontext(args.server.rstrip("/")) as url:
        report = evaluate_version(settings, persona, persona.live, url)

    extra = meta.model_extra or {}
    training = (
        f"trained in {trained_s:.0f} s wall ({meta.duration_s or 0:.0f} s in the trainer), "
        if trained_s is not None
        else ""
    )
    lines = [
        f"\n## Persona fidelity: {args.persona} {report.version}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"`bench/persona_eval.py {args.persona}{' --no-train' if args.no_train else ''}"
        f"{'' if args.personas_dir == REPO / 'personas' else f' --personas-dir {args.personas_dir}'}"
        f"{''.join(f' --set {item}' for item in args.sets)}"
        f"{''.join(f' --card {item!r}' for item in args.card_fields)}`; {os.cpu_count()} cores; "
        f"{training}report in {report.duration_s:.0f} s; tokens {meta.tokens}.",
        "",
        f"Training: {extra.get('epochs')} epochs of {extra.get('steps_per_epoch')} steps, best held-out loss "
        f"at step {extra.get('best_step')} of {extra.get('steps')}: {meta.eval_loss_before or 0:.4f} before, "
        f"{meta.eval_loss_after or 0:.4f} after.",
        *preference_line(extra.get("preference")),
        "",
        f"{report.heldout_sessions} held-out sessions, {report.scored_examples} real replies scored, "
        f"{report.prompts} prompts answered, {len(report.probes)} probes x {report.sessions} sessions.",
        "",
        *figure_table(report),
        "",
        *(line.replace("## ", "### ", 1) if line.startswith("## ") else line for line in identity_lines(report)),
        "",
    ]
    if report.forgetting is not None:
        lines.append(f"Forgetting (general-conversation perplexity, adapter vs base): {report.forgetting:+.1%}.\n")
    append_section("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
