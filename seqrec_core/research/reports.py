"""The files of a ``reports/<rq>/`` folder: tables (CSV + Markdown), figures
(PNG) and a README that says how they were produced (command, commit,
hardware, date). Every research command writes its folder through
:func:`write_readme`, so every report carries its provenance.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from seqrec_core import __version__

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def slug(text: str) -> str:
    """``text`` as a file-name part (letters, digits and ``._=+-``)."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "x"


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG and close it (figures are never shown)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def git_commit(cwd: Path | None = None) -> str:
    """``HEAD``'s hash of the checkout seqrec runs from (``cwd``: another one),
    with ``+dirty`` when its tracked files have changes; ``unknown`` outside git."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def hardware() -> dict[str, str]:
    """What the numbers were measured on."""
    import torch

    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "seqrec": __version__,
    }
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["gpu"] = ", ".join(names)
        info["cuda"] = str(torch.version.cuda)
    else:
        info["gpu"] = "none"
    return info


def provenance(command: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line (default: this process's own), commit, date and hardware."""
    if command is None:
        program = Path(sys.argv[0]).name
        # `python -m seqrec_core` and `python -m seqrec_core.cli` are the `seqrec` command
        modules = {"__main__.py": ["python", "-m", "seqrec_core"], "cli.py": ["seqrec"]}
        prefix = modules.get(program, [program])
        command = [*prefix, *sys.argv[1:]]
    return {
        "command": shlex.join(command),
        "commit": git_commit(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": hardware(),
    }


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant places, NaN as ``—``."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (missing cells: ``—``)."""
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = [
        "| " + " | ".join(fmt(r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in rows
    ]
    return "\n".join([head, rule, *body]) + "\n"


def write_table(
    rows: Sequence[dict[str, Any]],
    stem: Path,
    columns: Sequence[str] | None = None,
    md_columns: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """``stem.csv`` (every column, full precision) and ``stem.md`` (``md_columns``,
    rounded) of ``rows``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(list(rows), columns=list(columns) if columns else None)
    csv = stem.with_suffix(".csv")
    frame.to_csv(csv, index=False)
    md = stem.with_suffix(".md")
    md.write_text(markdown_table(rows, md_columns or columns), encoding="utf-8")
    return csv, md


FINDINGS = "FINDINGS.md"


def write_readme(
    folder: Path,
    title: str,
    body: str = "",
    files: Iterable[Path] = (),
    prov: dict[str, Any] | None = None,
) -> Path:
    """``folder/README.md``: title, ``body`` (tables, findings), the files of the
    folder and how they were produced. A hand-written ``folder/FINDINGS.md``
    (conclusions, hypotheses held or not) is kept and copied in after the title,
    so regenerating the report does not lose it."""
    prov = prov or provenance()
    lines = [f"# {title}", ""]
    findings = folder / FINDINGS
    if findings.is_file():
        lines += [findings.read_text(encoding="utf-8").rstrip(), ""]
        files = [*files, findings]
    if body:
        lines += [body.rstrip(), ""]
    listed = sorted({Path(f).name for f in files})
    if listed:
        lines += ["## Files", ""]
        for name in listed:
            link = f"![{name}]({name})" if name.endswith(".png") else f"[{name}]({name})"
            lines.append(f"- {link}")
        lines.append("")
    lines += [
        "## How this was produced",
        "",
        "```bash",
        prov["command"],
        "```",
        "",
        f"- commit: `{prov['commit']}`",
        f"- date: {prov['date']}",
        "- hardware: " + ", ".join(f"{k} {v}" for k, v in prov["hardware"].items()),
        "",
    ]
    path = folder / "README.md"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
