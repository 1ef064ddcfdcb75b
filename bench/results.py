"""Where benchmark figures go: sections appended to ``bench/RESULTS.md``, newest last."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is appended by the script it names.\n"


def append_section(text: str, out: Path = RESULTS) -> None:
    """Print a section and append it to ``out`` (created with a header when missing)."""
    print(text)
    if not out.exists():
        out.write_text(HEADER, encoding="utf-8")
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(text)


def cpu_description() -> str:
    """The processor's model name and which of AVX-512, its bfloat16 instructions and AMX it has: compile
    times, training steps and bfloat16's cost follow them, so every section that times them says which."""
    from service.engine import processor_fields

    fields = processor_fields()
    if not fields:
        return "an unknown CPU"
    flags = set(fields.get("flags", "").split())
    units = [name for name in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if name in flags]
    return f"{fields.get('model name', 'an unknown CPU')} ({', '.join(units) or 'no AVX-512 or AMX'})"
