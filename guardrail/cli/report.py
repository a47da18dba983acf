"""``guardrail report --artifact FILE --out DIR``: the calibration report of an artifact, as a static HTML page.

Writes ``DIR/index.html`` (reliability diagrams with bin counts, risk-coverage curves, a metrics table per
component, the certified thresholds, provenance), the PNG plots beside it and ``DIR/metrics.json``; see
:mod:`guardrail.calibration.report`. It loads no model.

Exit codes: 0 written; 2 an unreadable or invalid artifact, or an output folder that cannot be written or that
already holds something (without ``--force``; one line on stderr naming the file and the problem).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import app
from ._outputs import check_output_folder, fail

__all__ = ["report"]


@app.command()
def report(
    artifact: Annotated[Path, typer.Option(help="Calibration artifact (JSON, from `guardrail calibrate`).")],
    out: Annotated[Path, typer.Option(help="Folder for index.html, metrics.json and the plots (created).")],
    force: Annotated[
        bool, typer.Option("--force", help="Write into --out even if it holds files (a report's are replaced).")
    ] = False,
) -> None:
    """Write the calibration report of an artifact: an HTML page with plots, and a JSON file of the metrics."""
    from ..calibration.artifact import load_artifact
    from ..calibration.report import write_report
    from ..errors import ArtifactError

    check_output_folder(out, force=force)
    try:
        loaded = load_artifact(artifact)
    except ArtifactError as exc:
        fail(str(exc))
    try:
        page = write_report(loaded, out)
    except OSError as exc:
        fail(f"cannot write the report to {out}: {exc.strerror or exc}")
    if loaded.evaluation is None:
        typer.echo("note: this artifact holds no held-out scores; the page has tables but no plots", err=True)
    typer.echo(f"report written to {page}")
