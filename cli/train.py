"""``persona ingest``, ``persona train`` and ``persona import-card``: the training side."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer

from .common import build_settings, fail, given

Command = TypeVar("Command", bound=Callable[..., Any])

app = typer.Typer()


@app.command()
def ingest(
    name: Optional[str] = typer.Argument(None, help="The persona; with --logs-dir, the name the logs are for."),
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder."),
    base_model: Optional[str] = typer.Option(None, help="Base model whose tokenizer counts the tokens."),
    logs_dir: Optional[Path] = typer.Option(
        None, help="Read these logs instead of the persona's (e.g. files not yet added); the persona may not exist."
    ),
    speaker: Optional[list[str]] = typer.Option(
        None, help="The character's name in the logs (repeat for several); replaces the card's speakers."
    ),
    json_: bool = typer.Option(False, "--json", help="Print the report as JSON (no token counts)."),
) -> None:
    """Report what the persona's logs give: formats, speakers, turns, sessions, examples, tokens. Changes nothing."""
    from store.card import PersonaCard
    from store.errors import InvalidName, PersonaNotFound, StoreError
    from store.ingest_report import IngestReport, ReportError
    from store.names import check_name
    from store.registry import PersonaStore
    from store.settings import StoreSettings
    from training.config import TrainConfig
    from training.ingest import ExampleSettings, IngestError, TooFewExamples, build_examples, format_report, load_logs
    from training.ingest.report import ingest_report

    if name is None and logs_dir is None:
        fail("name a persona, or pass --logs-dir")
    settings = build_settings(StoreSettings, personas_dir=personas_dir, base_model=base_model)
    try:
        card, folder = PersonaCard(), logs_dir
        if name is not None:
            check_name(name)
            try:
                persona = PersonaStore(settings.personas_dir).get(name)
                card, folder = persona.card, logs_dir or persona.logs_dir
            except PersonaNotFound:
                if logs_dir is None:
                    raise
        if speaker:
            card = card.model_copy(update={"speakers": list(speaker)})
        example_settings = ExampleSettings.from_overrides(card.training)
        train_config = TrainConfig.from_overrides(card.training)
        result = load_logs(folder)
    except (InvalidName, StoreError, ValueError) as exc:
        if json_:  # the caller reads a report: this one says why there is nothing to report on
            error = ReportError(code="invalid_settings", message=str(exc))
            typer.echo(IngestReport(files=[], error=error).model_dump_json())
            raise typer.Exit(1) from None
        fail(str(exc))
    if json_:
        report = ingest_report(result, name or "", card, example_settings)
        typer.echo(report.model_dump_json())
        raise typer.Exit(1 if report.error else 0)
    try:
        examples = build_examples(result, name or "", card, example_settings)
    except TooFewExamples as exc:
        typer.echo(format_report(result, exc.examples, error=str(exc)))
        raise typer.Exit(1) from None
    except IngestError as exc:
        typer.echo(format_report(result, None, error=str(exc)))
        raise typer.Exit(1) from None
    from training.tokens import count_tokens

    typer.echo(format_report(result, examples, tokens=count_tokens(settings, examples, train_config)))


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value)
    return "unset" if value is None else str(value)


def setting_flags(command: Command) -> Command:
    """Give ``command`` one flag per training setting (:class:`training.config.TrainConfig`), passed as
    keyword arguments; the help is the setting's docstring, so a new setting is a documented flag."""
    from training.config import TrainConfig, flag_name, setting_type

    flags = []
    for name, info in TrainConfig.model_fields.items():
        kind, _ = setting_type(name)
        help_text = " ".join((info.description or "").split()) + f" [default: {_shown(info.default)}]"
        flag = flag_name(name)
        if kind is bool:
            option = typer.Option(None, f"{flag}/--no-{flag[2:]}", help=help_text, show_default=False)
        else:
            option = typer.Option(None, flag, help=help_text, show_default=False)
        flag_type = str if kind is tuple else kind  # module lists are given comma-separated
        flags.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[flag_type])
        )
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=own + flags)  # type: ignore[attr-defined]
    return command


@app.command()
@setting_flags
def train(
    name: Optional[str] = typer.Argument(None, help="The persona to train."),
    all_: bool = typer.Option(False, "--all", help="Every persona whose logs changed since its live version."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint of an interrupted run."),
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder."),
    base_model: Optional[str] = typer.Option(None, help="'bundled', a folder or a Hugging Face id."),
    **settings: Any,
) -> None:
    """Train a persona's adapter from its logs and publish it as the next version.

    The fidelity gate decides whether it goes live (held-out perplexity in this process when no
    server evaluates it); a pinned persona's new version is published beside the pinned one.

    Every training setting has a flag; a flag wins over the persona's persona.yaml ``training:``.
    """
    from store.errors import StoreError
    from store.jobs import JobStore
    from store.registry import PersonaStore
    from training.config import TrainingError
    from training.ingest import IngestError
    from training.job import JobSettings
    from training.run import config_for, needs_training

    if bool(name) == all_:
        fail("name one persona or pass --all")
    settings_ = build_settings(JobSettings, personas_dir=personas_dir, base_model=base_model)
    store = PersonaStore(settings_.personas_dir)
    flags = given(**settings)
    failures = 0
    try:
        if all_:
            personas, problems = store.scan()
            for bad, message in problems.items():
                typer.secho(f"{bad}: skipped: {message}", fg=typer.colors.YELLOW, err=True)
            names = [p.name for p in personas if needs_training(settings_, p)]
            typer.echo(f"to train: {', '.join(names) or 'none (every live version matches its logs)'}")
        else:
            names = [name]
    except (StoreError, TrainingError, IngestError) as exc:
        fail(str(exc))
    jobs = JobStore(settings_.personas_dir)
    queued = bool(jobs.live_workers())
    if queued:
        typer.echo("a training worker is running: the runs join its queue")
    for persona_name in names:
        try:
            config_for(store.get(persona_name), flags)  # bad settings fail here, before queuing
            if queued:
                result = _through_worker(settings_, jobs, persona_name, flags)
            else:
                result = _here(settings_, jobs, persona_name, flags, resume)
        except (StoreError, TrainingError, IngestError) as exc:
            typer.secho(f"{persona_name}: {exc}", fg=typer.colors.RED, err=True)
            failures += 1
            continue
        typer.echo(result)
    if failures:
        raise typer.Exit(1)


def _summary(persona, job) -> str:
    """What became of the run: the version, its figures, and the gate's decision with its reasons."""
    from store.fidelity_report import read_gate

    version, meta = job.version, persona.metadata(job.version)
    verb = "published" if job.outcome != "held back" else "published, held back by the fidelity gate,"
    lines = [
        f"{persona.name}: {verb} v{version} ({meta.steps} steps, {meta.duration_s:.0f} s, {meta.tokens_per_s:.0f} "
        f"tokens/s); held-out loss {_fmt(meta.eval_loss_before)} -> {_fmt(meta.eval_loss_after)}"
    ]
    decision = read_gate(persona.version_path(version))
    if decision is not None:
        status = decision.status + (" (forced)" if decision.forced else "")
        if decision.go_live and persona.live != version:
            status += f"; the pinned v{persona.live} stays live"
        lines.append(
            f"  gate: {status}" + (f" (compared with live {decision.compared_with})" if decision.compared_with else "")
        )
        lines += [f"    - {reason}" for reason in decision.reasons]
        lines += [f"    {_check_line(check)}" for check in decision.checks]
        lines += [f"    not measured: {missing}" for missing in decision.missing]
    return "\n".join(lines)


def _check_line(check) -> str:
    against = "the prompt-only persona" if check.figure == "card_perplexity" else "live"
    figure = "perplexity" if check.figure == "card_perplexity" else check.figure
    verdict = "within the tolerance" if check.passed else "worse beyond the tolerance"
    return f"{figure} {check.new:.3g} vs {against} {check.live:.3g} (limit {check.limit:.3g}): {verdict}"


def _here(settings_, jobs, name: str, flags: dict, resume: bool) -> str:
    """No worker is running: the job's runner, in this process (pin, gate and record as for any job)."""
    import time

    from store.jobs import JobError, this_process
    from store.registry import PersonaStore
    from training.config import TrainingError
    from training.runner import run_job

    job = jobs.create(
        name, "cli", status="running", started_at=time.time(), attempts=1, overrides=flags, **this_process()
    )
    try:
        job = run_job(settings_, job.id, resume=resume, progress=True)
    except BaseException as exc:  # Ctrl-C: the record says the run ended
        jobs.update(
            job.id,
            status="failed",
            finished_at=time.time(),
            error=JobError(code="training_failed", message=str(exc) or type(exc).__name__),
        )
        raise
    if job.status != "succeeded":
        raise TrainingError(job.error.message if job.error else f"the job was {job.status}")
    if job.version is None:
        return f"{name}: unchanged ({job.outcome})"
    return _summary(PersonaStore(settings_.personas_dir).get(name), job)


def _through_worker(settings_, jobs, name: str, flags: dict) -> str:
    """Queue the run for the worker and follow it to its end (Ctrl-C stops following, not the run)."""
    import time

    from tqdm.auto import tqdm

    from store.jobs import FINISHED, JobQueue, submit
    from store.registry import PersonaStore
    from training.config import TrainingError

    job = submit(jobs, JobQueue(settings_.queue_url, settings_.personas_dir), name, "cli", overrides=flags)
    typer.echo(f"{name}: queued as {job.id}")
    with tqdm(total=1, unit="step", desc=name, dynamic_ncols=True) as bar:
        while job.status not in FINISHED:
            time.sleep(1.0)
            job = jobs.get(job.id)
            if job.progress and job.progress.total_steps:
                bar.total = job.progress.total_steps
                bar.n = job.progress.step
                bar.refresh()
    if job.status != "succeeded":
        raise TrainingError(job.error.message if job.error else f"the job was {job.status}")
    if job.version is None:
        return f"{name}: unchanged ({job.outcome})"
    return _summary(PersonaStore(settings_.personas_dir).get(name), job)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@app.command("import-card")
def import_card(
    name: str,
    card: Path = typer.Argument(..., help="A SillyTavern character card: V2 JSON or PNG."),
    personas_dir: Optional[Path] = typer.Option(None, help="Personas folder."),
    force: bool = typer.Option(False, help="Replace an existing persona.yaml."),
) -> None:
    """Seed a persona's persona.yaml from a SillyTavern character card."""
    from store.card import CARD_FILE, write_card
    from store.errors import StoreError
    from store.registry import PersonaStore
    from store.settings import StoreSettings
    from training.ingest import import_card as read_card

    settings = build_settings(StoreSettings, personas_dir=personas_dir)
    try:
        imported = read_card(card)
        persona = PersonaStore(settings.personas_dir).create(name)
        if (persona.path / CARD_FILE).exists() and not force:
            fail(f"{persona.path / CARD_FILE} exists; pass --force to replace it")
        path = write_card(persona.path, imported)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"wrote {path}; drop the character's chat logs into {persona.logs_dir}")
