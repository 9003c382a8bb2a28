"""``python -m exportd.exporter`` as a child process with a test catalog, for the tests of whole
exports from the real databases: the spec it is given, the environment it runs in, its events,
its exporter's own peak memory, and the files it publishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openpyxl
import yaml

# Linux carries a process's peak RSS across exec, and a child spawned by pytest starts as a copy
# of pytest's (200 MB+) address space, so its ru_maxrss would count pytest's memory. A small
# launcher (fresh interpreter, ~10 MB) spawns the exporter and reads the exporter's own peak with
# wait4; the launcher's own size can only make the figure larger, never smaller.
RSS_LAUNCHER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as out:
    json.dump({"returncode": child.returncode, "max_rss_kib": usage.ru_maxrss}, out)
"""


def spec_document(
    export_type: str,
    file_name: str,
    variables: dict[str, Any],
    *,
    export_id: str,
    requested_by: str,
) -> dict[str, Any]:
    """An export spec as ``--spec-json`` takes it; the format follows the file name."""
    return {
        "id": export_id,
        "type": export_type,
        "format": file_name.rsplit(".", 1)[1],
        "fileName": file_name,
        "variables": variables,
        "requestedBy": requested_by,
        "requestedAt": datetime.now(UTC).isoformat(),
    }


@dataclass
class ChildRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    max_rss_bytes: int

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]


@dataclass
class Exporter:
    """Runs the exporter module as a child in ``workdir`` with the environment ``env``."""

    workdir: Path
    env: dict[str, str]

    @classmethod
    def with_catalog(
        cls, workdir: Path, types: dict[str, Any], sources_env: dict[str, str]
    ) -> Exporter:
        """A child whose catalog holds ``types`` (written to ``workdir``), configured only by
        its EXPORTD_* variables: the data directory in ``workdir``, the catalog, and
        ``sources_env``; none of the test process's own EXPORTD_* variables reach it."""
        catalog = workdir / "catalog.yaml"
        catalog.write_text(yaml.safe_dump({"types": types}), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")}
        env.update(
            EXPORTD_DATA_DIR=str(workdir / "data"),
            EXPORTD_CATALOG_PATH=str(catalog),
            **sources_env,
        )
        return cls(workdir, env)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def command(self, spec: dict[str, Any]) -> list[str]:
        return [sys.executable, "-m", "exportd.exporter", "--spec-json", json.dumps(spec)]

    def start(self, spec: dict[str, Any]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(spec),
            stdout=subprocess.PIPE,
            stderr=(self.workdir / f"{spec['id']}.stderr").open("w"),
            text=True,
            env=self.env,
        )

    def run(self, spec: dict[str, Any]) -> ChildRun:
        """Run to the end; the peak RSS is the exporter's own, read with ``wait4`` (see
        :data:`RSS_LAUNCHER` for why a small launcher process does the waiting)."""
        out_path = self.workdir / f"{spec['id']}.stdout"
        err_path = self.workdir / f"{spec['id']}.stderr"
        usage_path = self.workdir / f"{spec['id']}.rusage"
        launcher = [sys.executable, "-c", RSS_LAUNCHER, str(usage_path)]
        with out_path.open("w") as out, err_path.open("w") as err:
            subprocess.run(
                [*launcher, *self.command(spec)], stdout=out, stderr=err, env=self.env, check=False
            )
        usage = json.loads(usage_path.read_text())
        return ChildRun(
            returncode=usage["returncode"],
            events=[json.loads(line) for line in out_path.read_text().splitlines()],
            stderr=err_path.read_text(),
            max_rss_bytes=usage["max_rss_kib"] * 1024,
        )

    def stored_file(self, run: ChildRun) -> Path:
        return self.data_dir / "files" / str(run.last["objectKey"])

    def published_files(self) -> list[Path]:
        root = self.data_dir / "files"
        return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def sheet_rows(path: Path) -> list[tuple[Any, ...]]:
    """The rows of an exported workbook's ``Export`` sheet as openpyxl reads them."""
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        return [tuple(row) for row in book["Export"].iter_rows(values_only=True)]
    finally:
        book.close()
