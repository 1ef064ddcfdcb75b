"""Request and response bodies of the persona routes (``/v1/personas``): changes, uploads, creation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from store.ingest_report import IngestReport


class TrainRequest(BaseModel):
    force: bool = Field(
        default=False, description="Publish the new version even if the fidelity gate would hold it back."
    )


class VersionRequest(BaseModel):
    version: str | None = Field(
        default=None,
        description="A version such as 'v2'; for a rollback, the default is the version before the live one.",
        examples=["v1"],
    )


class PinRequest(BaseModel):
    pinned: bool = Field(description="True keeps the live version live when the persona is retrained automatically.")


class PersonaDeleted(BaseModel):
    id: str
    object: Literal["persona"] = "persona"
    deleted: bool = True


class UploadedFile(BaseModel):
    name: str = Field(description="The file's name as it will be stored in the persona's logs/ folder.")
    bytes: int


class PersonaUpload(BaseModel):
    """Chat exports staged for a persona, with what they give; nothing is stored in a persona yet."""

    id: str = Field(description="Pass it as `upload` to create a persona or add the files to one.")
    object: Literal["persona.upload"] = "persona.upload"
    created_at: int
    files: list[UploadedFile]
    report: IngestReport


class CreatePersonaRequest(BaseModel):
    name: str = Field(description="The new persona's name: a-z, 0-9, '_' and '-', up to 64 characters.")
    upload: str = Field(description="The id of a staged upload (POST /v1/personas/uploads).")
    character: list[str] = Field(
        default_factory=list,
        description="The character's name(s) in the logs, written to persona.yaml as `speakers`; needed when "
        "no speaker is named like the persona and the upload's report guessed none.",
    )
    train: bool = Field(default=True, description="Queue a training run of the new persona at once.")

    @field_validator("character", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class AddLogsRequest(BaseModel):
    upload: str = Field(description="The id of a staged upload (POST /v1/personas/uploads).")
    train: bool = Field(default=True, description="Queue a training run with the added logs at once.")
