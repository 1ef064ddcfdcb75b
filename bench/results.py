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
