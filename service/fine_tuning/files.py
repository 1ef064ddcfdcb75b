"""Uploaded files: kept under ``<personas>/.files/`` by id, never at a path the client names.

Every replica that shares the persona store sees the same files. An upload is streamed to a
temporary file and renamed into place, so a broken upload leaves nothing behind.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from store.files import atomic_write

from ..errors import APIError, bad_request
from .protocol import FileObject

FILES_DIR = ".files"
CHUNK = 1 << 20


def file_not_found(file_id: str, param: str = "file_id") -> APIError:
    return APIError(404, f"No such File object: {file_id}", "invalid_request_error", param, "file_not_found")


class FileStore:
    def __init__(self, personas_dir: Path, max_bytes: int) -> None:
        self.root = Path(personas_dir) / FILES_DIR
        self.max_bytes = max_bytes

    def _paths(self, file_id: str) -> tuple[Path, Path]:
        if not file_id.startswith("file-") or not file_id[5:].isalnum():
            raise file_not_found(file_id)
        return self.root / file_id, self.root / f"{file_id}.json"

    async def save(self, filename: str, chunks: AsyncIterator[bytes]) -> FileObject:
        """Store an upload; a file over ``max_bytes`` or an empty one is refused (400)."""
        self.root.mkdir(parents=True, exist_ok=True)
        file_id = f"file-{secrets.token_hex(12)}"
        data_path, meta_path = self._paths(file_id)
        partial = self.root / f".{file_id}.part"
        size = 0
        try:
            with open(partial, "wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise bad_request(
                            f"file: larger than the {self.max_bytes // (1 << 20)} MiB limit", "file", "file_too_large"
                        )
                    handle.write(chunk)
            if size == 0:
                raise bad_request("file: the uploaded file is empty", "file", "empty_file")
            partial.rename(data_path)
        finally:
            partial.unlink(missing_ok=True)
        safe_name = Path(filename or "upload").name[:255] or "upload"
        obj = FileObject(id=file_id, bytes=size, created_at=int(time.time()), filename=safe_name)
        atomic_write(meta_path, obj.model_dump_json())
        return obj

    def get(self, file_id: str, param: str = "file_id") -> FileObject:
        _, meta_path = self._paths(file_id)
        try:
            return FileObject.model_validate_json(meta_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            raise file_not_found(file_id, param) from None

    def content_path(self, file_id: str, param: str = "file_id") -> Path:
        self.get(file_id, param)
        return self._paths(file_id)[0]

    def all(self) -> list[FileObject]:
        if not self.root.is_dir():
            return []
        found = []
        for meta in self.root.glob("file-*.json"):
            try:
                found.append(FileObject.model_validate_json(meta.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda f: (f.created_at, f.id))

    def delete(self, file_id: str) -> None:
        data_path, meta_path = self._paths(file_id)
        self.get(file_id)
        meta_path.unlink(missing_ok=True)
        data_path.unlink(missing_ok=True)


def first_chat_jsonl_problem(path: Path) -> tuple[str, str] | None:
    """For an OpenAI chat JSONL file: the first malformed line as (message, param), or None.

    Files in the other supported export formats are checked by the trainer when the job runs; a JSONL
    file (its first character is ``{``) is checked here, so the job fails fast and says which line
    and field are wrong.
    """
    with open(path, "rb") as handle:
        head = handle.read(64).lstrip()
    if not head.startswith(b"{"):
        return None
    assistant_lines = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                record = json.loads(line)
            except ValueError as exc:
                return f"{where}: not valid JSON ({exc.msg})", "training_file"
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or not messages:
                return f"{where}: field 'messages' must be a non-empty list", "training_file"
            for index, message in enumerate(messages):
                field = f"messages[{index}]"
                if not isinstance(message, dict):
                    return f"{where}: field '{field}' must be an object", "training_file"
                if message.get("role") not in ("system", "developer", "user", "assistant"):
                    return (
                        f"{where}: field '{field}.role' must be system, user or assistant, got {message.get('role')!r}",
                        "training_file",
                    )
                if not isinstance(message.get("content"), str):
                    return f"{where}: field '{field}.content' must be a string", "training_file"
                if "weight" in message and message["weight"] not in (0, 1):
                    return f"{where}: field '{field}.weight' must be 0 or 1", "training_file"
            assistant_lines += any(m.get("role") == "assistant" for m in messages)
    if not assistant_lines:
        return "no line has an assistant message to learn from", "training_file"
    return None
