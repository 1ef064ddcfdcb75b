"""Chat exports uploaded for a persona, from the API or the page: staged, reported on, then stored.

An upload is staged under ``<personas>/.uploads/<id>/logs/`` (file names reduced to their base name,
never a path the client names) and its ingest report is made by ``persona ingest --json`` in its own
process, so the server never imports the parsers. Creating a persona moves the staged folder into
place in one rename, so the watcher never sees half a persona; adding to one never replaces a log
with different content. Staged uploads nobody used are removed after an hour.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from store.card import PersonaCard, write_card
from store.errors import InvalidName
from store.files import atomic_write
from store.ingest_report import IngestReport
from store.names import NAME_PATTERN, check_name
from store.registry import LOGS_DIR, Persona, PersonaStore

from .errors import APIError, bad_request
from .personas.actions import get_persona
from .personas.protocol import PersonaUpload, UploadedFile

UPLOADS_DIR = ".uploads"
STAGED_FOR_S = 3600.0
"""How long a staged upload waits for a persona to be created from it."""
REPORT_TIMEOUT_S = 300.0
CHUNK = 1 << 20
MAX_NAME_BYTES = 255

FileSource = tuple[str, AsyncIterator[bytes]]
"""A file as the client named it, and its content."""


def files_error(message: str, code: str) -> APIError:
    return bad_request(message, "files", code)


def upload_not_found(upload_id: str) -> APIError:
    return APIError(
        404, f"No staged upload {upload_id!r} (uploads are kept for an hour)", "invalid_request_error", "upload",
        "upload_not_found",
    )  # fmt: skip


def base_name(filename: str) -> str:
    """The name a file is stored under: its base name, refused (400) when no safe name is left."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    if not name or name in (".", ".."):
        raise files_error(f"{filename!r}: a file needs a name", "invalid_file_name")
    if name.startswith("."):
        raise files_error(
            f"{name}: a name starting with '.' is a hidden file, never read as a log", "invalid_file_name"
        )
    if len(name.encode("utf-8", errors="replace")) > MAX_NAME_BYTES or any(
        ord(c) < 32 or 0xD800 <= ord(c) < 0xE000 for c in name
    ):
        raise files_error(
            f"{name!r}: file names must be under 256 bytes without control characters", "invalid_file_name"
        )
    return name


async def path_chunks(path: Path) -> AsyncIterator[bytes]:
    """A file on disk as upload chunks (the page's uploads arrive as temporary files)."""
    with open(path, "rb") as handle:
        while data := handle.read(CHUNK):
            yield data


class Uploads:
    """The staging folder of one personas folder."""

    def __init__(self, personas_dir: Path, max_bytes: int) -> None:
        self.personas_dir = Path(personas_dir)
        self.root = self.personas_dir / UPLOADS_DIR
        self.max_bytes = max_bytes

    # ------------------------------------------------------------------ staging

    def _dir(self, upload_id: str) -> Path:
        if not upload_id.startswith("upload-") or not upload_id[7:].isalnum():
            raise upload_not_found(upload_id)
        return self.root / upload_id

    async def _write(self, target: Path, chunks: AsyncIterator[bytes]) -> int:
        size = 0
        with open(target, "wb") as handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_bytes:
                    raise files_error(
                        f"{target.name}: larger than the {self.max_bytes >> 20} MiB limit", "file_too_large"
                    )
                handle.write(chunk)
        if size == 0:
            raise files_error(f"{target.name}: the file is empty", "empty_file")
        return size

    async def stage(self, files: Iterable[FileSource], name: str | None = None) -> PersonaUpload:
        """Stage the files and report on them; refused (400, naming the file) when one is empty, too
        large, twice in the upload, or no supported chat export. ``name`` (when valid) is the persona
        the report matches the character against, and whose card it uses when it exists."""
        self.clean()
        upload_id = f"upload-{secrets.token_hex(12)}"
        folder = self._dir(upload_id)
        logs = folder / LOGS_DIR
        logs.mkdir(parents=True)
        stored: list[UploadedFile] = []
        try:
            for filename, chunks in files:
                stored_name = base_name(filename)
                if any(f.name == stored_name for f in stored):
                    raise files_error(f"{stored_name}: two files of this name in one upload", "duplicate_file")
                stored.append(UploadedFile(name=stored_name, bytes=await self._write(logs / stored_name, chunks)))
            if not stored:
                raise files_error("files: upload at least one chat export", "no_files")
            report = await self.report(folder, name if name and NAME_PATTERN.fullmatch(name) else None)
            bad = report.unusable
            if bad:
                reasons = "; ".join(f"{f.file}: {', '.join(f.problems)}" for f in bad)
                raise files_error(f"not a supported chat export: {reasons}", "unsupported_file")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        upload = PersonaUpload(id=upload_id, created_at=int(time.time()), files=stored, report=report)
        atomic_write(folder.with_suffix(".json"), upload.model_dump_json())
        return upload

    def get(self, upload_id: str) -> PersonaUpload:
        folder = self._dir(upload_id)
        try:
            upload = PersonaUpload.model_validate_json(folder.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise upload_not_found(upload_id) from None
        if not (folder / LOGS_DIR).is_dir():
            raise upload_not_found(upload_id)
        return upload

    def discard(self, upload_id: str) -> None:
        folder = self._dir(upload_id)
        folder.with_suffix(".json").unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)

    def clean(self, now: float | None = None) -> None:
        """Remove staged uploads older than :data:`STAGED_FOR_S`."""
        if not self.root.is_dir():
            return
        now = time.time() if now is None else now
        for entry in self.root.iterdir():
            try:
                old = now - entry.stat().st_mtime > STAGED_FOR_S
            except OSError:
                continue
            if old and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            elif old:
                entry.unlink(missing_ok=True)

    # ------------------------------------------------------------------ the report

    async def report(self, folder: Path, name: str | None, speakers: Iterable[str] = ()) -> IngestReport:
        """``persona ingest --json`` over the staged logs, in its own process."""
        command = [sys.executable, "-m", "cli.main", "ingest", *([name] if name else [])]
        command += ["--logs-dir", str(folder / LOGS_DIR), "--personas-dir", str(self.personas_dir), "--json"]
        for speaker in speakers:
            command += ["--speaker", speaker]
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), REPORT_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise APIError(500, "Reading the uploaded logs took too long.", "server_error") from None
        lines = out.decode("utf-8", errors="replace").strip().splitlines()
        try:
            return IngestReport.model_validate_json(lines[-1])
        except (IndexError, ValidationError, ValueError):
            detail = err.decode("utf-8", errors="replace").strip().splitlines()
            raise APIError(
                500, f"Reading the uploaded logs failed: {detail[-1] if detail else 'no report'}", "server_error"
            ) from None

    # ------------------------------------------------------------------ into a persona

    def _speakers(self, upload: PersonaUpload, wanted: list[str]) -> list[str]:
        known = [s.name for s in upload.report.speakers]
        for speaker in wanted:
            if speaker not in known:
                listed = ", ".join(known) or "none (the logs mark the character by role)"
                raise bad_request(
                    f"character: {speaker!r} is not a speaker in the upload; speakers: {listed}",
                    "character",
                    "unknown_speaker",
                )
        return wanted

    @staticmethod
    def _refuse(report: IngestReport) -> None:
        if report.error is None:
            return
        param = "character" if report.error.code == "no_character_speaker" else "upload"
        raise bad_request(f"{param}: {report.error.message}", param, report.error.code)

    async def create(self, store: PersonaStore, name: str, upload_id: str, character: list[str]) -> Persona:
        """A new persona from a staged upload: its logs exactly as uploaded, and ``persona.yaml`` naming
        the character when one was picked (or guessed). Refused before anything is stored."""
        try:
            check_name(name)
        except InvalidName as exc:
            raise bad_request(f"name: {exc}", "name", "invalid_name") from None
        target = self.personas_dir / name
        if target.exists():
            raise APIError(
                409,
                f"name: a persona named '{name}' exists; add the files to it with POST /v1/personas/{name}/logs",
                "invalid_request_error",
                "name",
                "persona_exists",
            )
        upload = self.get(upload_id)
        speakers = self._speakers(upload, character)
        folder = self._dir(upload_id)
        report = await self.report(folder, name, speakers)
        self._refuse(report)
        if not speakers and report.character_from == "guess":
            speakers = report.character
        if speakers:
            write_card(folder, PersonaCard(speakers=speakers))
        try:
            target.mkdir()  # claims the name; the rename below replaces this empty folder at once
        except FileExistsError:
            raise APIError(
                409, f"name: a persona named '{name}' exists", "invalid_request_error", "name", "persona_exists"
            ) from None
        os.replace(folder, target)
        folder.with_suffix(".json").unlink(missing_ok=True)
        return store.get(name)

    async def add(self, store: PersonaStore, name: str, upload_id: str) -> Persona:
        """Add a staged upload's files to a persona's logs. A file of the same name is left alone when
        it has the same content and refused (409) when it differs; nothing is moved until all fit."""
        persona = get_persona(store, name)
        upload = self.get(upload_id)
        folder = self._dir(upload_id)
        staged = [folder / LOGS_DIR / f.name for f in upload.files]
        for source in staged:
            existing = persona.logs_dir / source.name
            if existing.exists() and not _same_content(existing, source):
                raise APIError(
                    409,
                    f"upload: {LOGS_DIR}/{source.name} exists with other content; rename the file and upload it again",
                    "invalid_request_error",
                    "upload",
                    "file_exists",
                )
        report = await self.report(folder, persona.name)
        if report.error is not None and report.error.code != "too_few_examples":  # the logs together may do
            self._refuse(report)
        persona.logs_dir.mkdir(parents=True, exist_ok=True)
        for source in staged:
            try:
                os.link(source, persona.logs_dir / source.name)  # never replaces a file
            except FileExistsError:
                pass  # the same content (checked above)
        self.discard(upload_id)
        return store.get(persona.name)


def _same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as left, open(b, "rb") as right:
        while True:
            x, y = left.read(CHUNK), right.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True
