"""The light install measured: what ``pip install lvlm-guardrail`` (no extras) adds to a fresh environment, how long
``import guardrail`` takes there, and that a guarded call through a remote server works in it without torch.

Steps: copy the checkout (without ``.git`` and local environments) to a work folder; ``python -m venv`` there;
``pip install`` the copy, no extras (pip takes the dependencies from its configured index, PyPI by default);
measure ``site-packages`` before and after (disk use, as ``du`` counts it, and the files' bytes), each installed
distribution's share, and ``import guardrail`` in fresh interpreters (the median of ``--runs``, wall-clock and the
process's CPU time); then run ``bench/_light_check.py`` with that environment's interpreter: the remote and black-box
modules import with torch, transformers, SciPy, scikit-learn and Matplotlib refused, two guarded calls against a
fake OpenAI-compatible server on 127.0.0.1 succeed, the shipped artifact applies, and what needs an extra says
which one.

Targets (issue 31): the install adds <= 150 MB (MB = 10^6 bytes), ``import guardrail`` <= 1 s. On a shared machine
the wall-clock import time counts the neighbours' load too; the CPU time is the import's own cost, and both are
recorded.

Run:  .venv/bin/python bench/light_install.py [--runs 7] [--out bench/results/light_install.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _provenance import provenance, relative

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "bench" / "_light_check.py"
FAKE_SERVER = ROOT / "tests" / "support" / "fake_openai_server.py"
TARGET_MB = 150.0
TARGET_IMPORT_S = 1.0
MB = 1e6
HEAVY = ("torch", "transformers", "scipy", "scikit-learn", "matplotlib", "safetensors", "easy-vqa")
"""Distributions the light install must not bring."""
_SKIP = (".git", ".venv", ".vllm-venv", ".venv-phoenix", "build", "dist", "site", "__pycache__", "*.egg-info",
         ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "guardrail-demo", "out")  # fmt: skip

_IMPORT_TIMER = (
    "import time; w = time.perf_counter(); c = time.process_time(); import guardrail; "
    "print(time.perf_counter() - w, time.process_time() - c)"
)
_DIST_SIZES = """
import importlib.metadata as md, json, os
rows = []
for d in md.distributions():
    seen, used, size = set(), 0, 0
    for f in d.files or []:
        p = os.path.realpath(d.locate_file(f))
        if p in seen or not os.path.isfile(p):
            continue
        seen.add(p)
        st = os.stat(p)
        used, size = used + st.st_blocks * 512, size + st.st_size
    rows.append([d.metadata["Name"], d.version, used, size])
print(json.dumps(rows))
"""


@dataclass(frozen=True)
class Usage:
    """A folder's size: ``disk`` as ``du`` counts it (allocated blocks), ``files`` the bytes of its files."""

    disk: int
    files: int


def folder_usage(folder: Path) -> Usage:
    """Every file under ``folder`` once (hard links once), not following symbolic links."""
    seen: set[tuple[int, int]] = set()
    disk = files = 0
    for path in folder.rglob("*"):
        st = path.lstat()
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        disk += st.st_blocks * 512
        files += st.st_size if path.is_file() and not path.is_symlink() else 0
    return Usage(disk, files)


def _run(command: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    done = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def _clean_env() -> dict[str, str]:
    """The environment for the fresh interpreter: no PYTHONPATH (the checkout must not shadow the install)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the timings must not write .pyc files into the measured folder
    return env


def _site_packages(python: Path, cwd: Path) -> Path:
    return Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=cwd).strip())


def measure(work: Path, runs: int) -> dict[str, Any]:
    """Build the fresh environment under ``work`` and measure it (the record's ``install`` and ``check`` parts)."""
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*_SKIP), symlinks=True)
    venv = work / "env"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=work)
    python = venv / "bin" / "python"
    site = _site_packages(python, work)
    before = folder_usage(site)
    clean = _clean_env()
    baseline = {name for name, *_ in json.loads(_run([str(python), "-c", _DIST_SIZES], cwd=work, env=clean))}
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)], cwd=work, env=env)
    install_seconds = time.perf_counter() - start
    after = folder_usage(site)
    dists = [
        row for row in json.loads(_run([str(python), "-c", _DIST_SIZES], cwd=work, env=clean)) if row[0] not in baseline
    ]
    names = {name.lower() for name, *_ in dists}
    _run([str(python), "-c", "import guardrail"], cwd=work, env=clean)  # once, so that the timed runs read warm files
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = _run([str(python), "-c", _IMPORT_TIMER], cwd=work, env=clean).split()
        walls.append(float(wall))
        cpus.append(float(cpu))
    check = json.loads(_run([str(python), str(CHECK), str(FAKE_SERVER)], cwd=work, env=clean))
    added_disk, added_files = (after.disk - before.disk) / MB, (after.files - before.files) / MB
    largest = sorted(dists, key=lambda row: -row[2])[:15]
    return {
        "install": {
            "python": sys.version.split()[0],
            "pip_install_seconds": round(install_seconds, 1),
            "added_mb_disk": round(added_disk, 1),
            "added_mb_files": round(added_files, 1),
            "distributions_added": len(dists),
            "largest_mb_disk": {f"{name} {version}": round(used / MB, 1) for name, version, used, _ in largest},
            "absent": {name: name not in names for name in HEAVY},
        },
        "import_guardrail": {
            "runs": runs,
            "median_wall_s": round(statistics.median(walls), 3),
            "median_cpu_s": round(statistics.median(cpus), 3),
            "wall_s": [round(x, 3) for x in walls],
            "cpu_s": [round(x, 3) for x in cpus],
            "load_average_1min": round(os.getloadavg()[0], 2),
            "cpu_count": os.cpu_count(),
        },
        "check": check,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed imports of guardrail (median reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "light_install.json")
    parser.add_argument("--work", type=Path, default=None, help="keep the environment in this (empty) folder")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    record: dict[str, Any] = {**provenance(__file__, argv)}
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        record.update(measure(args.work, args.runs))
    else:
        with tempfile.TemporaryDirectory(prefix="guardrail-light-") as work:
            record.update(measure(Path(work), args.runs))
    added, imported = record["install"]["added_mb_disk"], record["import_guardrail"]
    record["targets"] = {
        "added_mb": TARGET_MB,
        "import_s": TARGET_IMPORT_S,
        "added_mb_disk_met": added <= TARGET_MB,
        "added_mb_files_met": record["install"]["added_mb_files"] <= TARGET_MB,
        "import_cpu_met": imported["median_cpu_s"] <= TARGET_IMPORT_S,
        "import_wall_met": imported["median_wall_s"] <= TARGET_IMPORT_S,
    }
    record["check"]["guardrail_file"] = relative(record["check"]["guardrail_file"]).split("site-packages/")[-1]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"added {added} MB on disk ({record['install']['added_mb_files']} MB of files); import guardrail median "
          f"{imported['median_wall_s']} s wall, {imported['median_cpu_s']} s CPU -> {relative(args.out)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
