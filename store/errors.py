"""Errors raised by the store, each naming the file, field or name at fault."""


class StoreError(Exception):
    """Base class: something about the persona store on disk is wrong."""


class InvalidName(StoreError):
    """A persona name or version that is not allowed (it could reach outside the store)."""


class CardError(StoreError):
    """``persona.yaml`` cannot be read or does not validate."""


class PersonaNotFound(StoreError):
    """No persona folder of that name."""


class VersionNotFound(StoreError):
    """The persona has no adapter version of that name."""


class BaseModelMismatch(StoreError):
    """An adapter was trained on another base model than the one being served."""
