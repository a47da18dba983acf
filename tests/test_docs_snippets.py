"""Every code block of the README and the documentation site runs as written (issue 32, item 8).

A page is read as a reader reads it: its blocks in order, in one fresh folder, offline (``HF_HUB_OFFLINE=1``).

- A ```` ```python ```` block runs in one Python process per page, each block in the namespace the page's
  earlier blocks left (a reader who copies the quick start has its ``guard`` when the next block uses it).
- A ```` ```bash ```` / ```` ```console ```` block that holds ``guardrail`` commands runs in ``bash`` (``set -eu``),
  with this interpreter's ``guardrail`` first on ``PATH``; every line of such a block must be a ``guardrail``
  command (a comment, a continuation or a ``$`` prompt aside). Blocks of other programs (``make``, ``pip``,
  ``python -m vllm``) are not this package's commands and are not run.
- A block right after ``<!-- file: NAME -->`` is written to ``NAME`` in the page's folder (a policy the next
  command checks, a JSONL file the next command reads).
- A block right after ``<!-- no-run: REASON -->`` is skipped; the reason is required, and the skips are few
  (:data:`MAX_SKIPPED`).

Tracebacks name the page and its line (each block is compiled as ``PAGE`` with its own line numbers). The README
runs with ``make test``; a documentation page whose blocks load a model (:data:`MODEL_LOADS`) is ``slow``; a page
in :data:`NEEDS_POSTGRES` gets a throwaway PostgreSQL server (``tests/support/postgres.py``) as
``$ESCALATIONS_DB``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MAX_SKIPPED = 10
"""Blocks of ``guardrail`` commands or Python that may be skipped (each with its reason in the page)."""
MODEL_LOADS = ("load_guard(", "load_backend(", "guardrail ask", "guardrail calibrate", "guardrail report")
"""What in a runnable block loads a model (or a model's artifact) and makes a documentation page slow."""
FAST_PAGES = {"README.md"}
"""Pages run by ``make test`` even though they load a model: the README's quick start is the first promise."""
NEEDS_POSTGRES = {"docs/scaling.md"}
PAGE_TIMEOUT = 900

_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*(no-run|file):\s*(.*?)\s*-->\s*$")
_PROMPT = re.compile(r"^\$ ")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its text, the line its text starts on, and the directive before it."""

    page: str
    language: str
    source: str
    line: int
    directive: tuple[str, str] | None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_python(self) -> bool:
        return self.language == "python"

    @property
    def is_shell(self) -> bool:
        return self.language in {"bash", "console", "sh", "shell"}

    @property
    def commands(self) -> list[str]:
        """The shell block's command lines: comments, blank lines and continuations left out."""
        lines = [_PROMPT.sub("", line) for line in self.source.splitlines()]
        commands: list[str] = []
        continued = False
        for line in lines:
            stripped = line.strip()
            if not continued and stripped and not stripped.startswith("#"):
                commands.append(stripped)
            continued = stripped.endswith("\\")
        return commands

    @property
    def is_guardrail_shell(self) -> bool:
        return self.is_shell and any(command.startswith("guardrail ") for command in self.commands)

    @property
    def runnable(self) -> bool:
        """Written to a file, or run: Python, or a shell block of ``guardrail`` commands not marked no-run."""
        if self.directive is not None and self.directive[0] == "file":
            return True
        if self.directive is not None and self.directive[0] == "no-run":
            return False
        return self.is_python or self.is_guardrail_shell


def blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """The fenced blocks of a Markdown page, in order, each with the directive comment right before it."""
    page = path.relative_to(root).as_posix()
    found: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        start = index + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        directive = _DIRECTIVE.match(previous.strip())
        found.append(
            Block(
                page=page,
                language=match.group(1),
                source="\n".join(lines[start:end]) + "\n",
                line=start + 1,
                directive=(directive.group(1), directive.group(2)) if directive else None,
            )
        )
        index = end + 1
    return found


Completed = subprocess.CompletedProcess[str]
ALL_BLOCKS = [block for path in PAGES for block in blocks(path)]

# Runs in the page's folder: reads the blocks as JSON on stdin and performs each in order.
_DRIVER = r"""
import json, subprocess, sys
from pathlib import Path
namespace = {"__name__": "__main__"}
for block in json.load(sys.stdin):
    print(f"--- {block['where']} ({block['kind']})", flush=True)
    if block["kind"] == "file":
        Path(block["name"]).write_text(block["source"])
    elif block["kind"] == "python":
        padded = "\n" * (block["line"] - 1) + block["source"]
        exec(compile(padded, block["page"], "exec"), namespace)
        sys.stdout.flush()
    else:
        subprocess.run(["bash", "-eu", "-c", block["source"]], check=True)
"""


def _payload(block: Block) -> dict[str, object]:
    kind = "file" if block.directive and block.directive[0] == "file" else "python" if block.is_python else "shell"
    name = block.directive[1] if block.directive and kind == "file" else None
    source = "\n".join(_PROMPT.sub("", line) for line in block.source.splitlines()) if kind == "shell" else block.source
    return {
        "kind": kind,
        "name": name,
        "source": source,
        "page": block.page,
        "line": block.line,
        "where": block.where,
    }


def _page_param(path: Path) -> object:
    page = path.relative_to(ROOT).as_posix()
    runnable = [block for block in blocks(path) if block.runnable]
    loads_model = any(pattern in block.source for block in runnable for pattern in MODEL_LOADS)
    marks = [pytest.mark.slow] if loads_model and page not in FAST_PAGES else []
    return pytest.param(page, marks=marks, id=page)


RUNNABLE_PAGES = [_page_param(path) for path in PAGES if any(block.runnable for block in blocks(path))]


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_a_page_runs_as_written(page: str, tmp_path: Path) -> None:
    path = ROOT / page
    payload = [_payload(block) for block in blocks(path) if block.runnable]
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    if page in NEEDS_POSTGRES:
        from tests.support.postgres import running_postgres

        with running_postgres() as server:
            environment["ESCALATIONS_DB"] = server.create_database()
            done = _run(payload, tmp_path, environment)
    else:
        done = _run(payload, tmp_path, environment)
    assert done.returncode == 0, f"{page}: a block failed\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"


def _run(
    payload: list[dict[str, object]], folder: Path, environment: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _DRIVER],
        input=json.dumps(payload),
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT,
        check=False,
    )


def test_a_skipped_block_says_why_and_skips_are_few() -> None:
    skipped = [block for block in ALL_BLOCKS if block.directive and block.directive[0] == "no-run"]
    assert all(block.directive and block.directive[1] for block in skipped), "no-run needs a reason"
    assert len(skipped) <= MAX_SKIPPED, [block.where for block in skipped]


def test_a_block_of_guardrail_commands_holds_nothing_else() -> None:
    """A block that mixes ``guardrail`` commands with other programs is either all run or marked no-run: never
    half run (``pip install`` inside a test) and never silently skipped."""
    mixed = [
        block.where
        for block in ALL_BLOCKS
        if block.is_guardrail_shell
        and block.runnable
        and not all(command.startswith("guardrail ") for command in block.commands)
    ]
    assert mixed == []


def test_the_readme_quick_start_is_run_by_make_test() -> None:
    readme = [block for block in ALL_BLOCKS if block.page == "README.md" and block.is_python]
    assert readme, "the README shows Python"
    assert all(block.runnable for block in readme)
    assert any("load_guard(" in block.source for block in readme)


def test_blocks_are_found_with_their_directives(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n<!-- file: p.yaml -->\n```yaml\nversion: 1\n```\n\n<!-- no-run: serves forever -->\n"
        "```bash\nguardrail escalations serve --db x\n```\n\n```console\n$ guardrail ask a.png \\\n  q\nmake x\n```\n"
    )
    found = blocks(page, root=tmp_path)
    assert [(b.language, b.line, b.directive) for b in found] == [
        ("yaml", 5, ("file", "p.yaml")),
        ("bash", 10, ("no-run", "serves forever")),
        ("console", 14, None),
    ]
    assert [b.runnable for b in found] == [True, False, True]
    assert found[2].commands == ["guardrail ask a.png \\", "make x"]
