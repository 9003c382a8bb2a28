"""``make bench``: exportd against the usual ways, each as a whole process, paired and interleaved.

Creates the benchmark tables in PostgreSQL when missing. exportd runs exactly as a Job runs it:
``python -m exportd.exporter --spec-json ...`` with settings in its environment (catalog,
source, local storage), publish and hash included; the baselines are ``bench/cases.py``
processes. Every process is measured by ``measure.py`` (wall seconds, CPU seconds, peak RSS).

Each comparison runs its two sides interleaved, A B A B A B (``PAIRS`` pairs), so the load of the
shared machine falls on both alike; it reports the median of the per-pair ratios with their
min-max, and both sides' median CPU seconds. Every output is read back by an independent reader
and every column compared with the table (``validate.py``). Targets are printed PASS or FAIL;
the same report goes to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from cases import DSN
from tables import ensure_adversarial_table, ensure_table, ensure_wide_table, table_name
from validate import Reference, check, expected

HERE = Path(__file__).parent
PYTHON = sys.executable
PAIRS = 3
API_ROWS = 100_000
MILLION = 1_000_000


@dataclass
class Run:
    wall: float
    cpu: float
    peak_mib: float


@dataclass
class Side:
    """Runs of one case (exportd or a baseline) on one table and format."""

    label: str
    runs: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def median(self, attribute: str = "wall") -> float:
        return statistics.median(getattr(run, attribute) for run in self.runs)

    @property
    def peak(self) -> float:
        return max(run.peak_mib for run in self.runs)


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "exportd-data"
        self.catalog = workdir / "catalog.json"
        self.references: dict[str, Reference] = {}
        self.sides: dict[str, Side] = {}
        self.lines: list[str] = []
        self._count = 0

    def write_catalog(self, tables: list[str]) -> None:
        types = {
            t: {"source": "benchpg", "query": f"SELECT * FROM {t} ORDER BY id"} for t in tables
        }
        types["small15"] = {
            "source": "benchpg",
            "query": f"SELECT * FROM {table_name(100_000)} ORDER BY id LIMIT 15",
        }
        self.catalog.write_text(json.dumps({"types": types}), encoding="utf-8")

    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")},
            "EXPORTD_DATA_DIR": str(self.data_dir),
            "EXPORTD_CATALOG_PATH": str(self.catalog),
            "EXPORTD_SOURCES": json.dumps({"benchpg": {"kind": "postgres", "dsn": DSN}}),
        }

    def _measure(self, command: list[str], env: dict[str, str] | None = None) -> Run:
        done = subprocess.run(
            [PYTHON, str(HERE / "measure.py"), *command],
            capture_output=True,
            text=True,
            env=env,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["code"] != 0:
            raise RuntimeError(f"{command[:4]} exited with {result['code']}: {done.stderr[-2000:]}")
        return Run(result["wall"], result["cpu"], result["peak_mib"])

    def run(self, case: str, table: str, validate: bool = True) -> Run:
        """One process of ``case`` (``exportd_xlsx``, ``exportd_csv`` or a baseline) on
        ``table``; its output validated, then removed."""
        self._count += 1
        if case.startswith("exportd_"):
            suffix = case.removeprefix("exportd_")
            spec = {
                "id": f"bench-{self._count}",
                "type": table,
                "format": suffix,
                "fileName": f"out.{suffix}",
                "variables": {},
                "requestedBy": "bench",
                "requestedAt": "2026-01-01T00:00:00Z",
            }
            command = [PYTHON, "-m", "exportd.exporter", "--spec-json", json.dumps(spec)]
            run = self._measure(command, self.env())
            output = self.data_dir / "files" / "exports" / spec["id"] / spec["fileName"]
        else:
            output = self.workdir / f"{case}-{self._count}{'.csv' if 'csv' in case else '.xlsx'}"
            run = self._measure([PYTHON, str(HERE / "cases.py"), case, table, str(output)])
        side = self.sides.setdefault(f"{case} {table}", Side(f"{case} {table}"))
        side.runs.append(run)
        if validate and table in self.references:
            # The adversarial table has no canonical text per column (docs/types.md cases):
            # its rows are counted; tests/integration/test_roundtrip_properties.py checks cells.
            columns = table != "bench_adversarial"
            found = check(output, self.references[table], columns=columns)
            side.problems = side.problems or found
        output.unlink(missing_ok=True)
        shutil.rmtree(self.data_dir / "files", ignore_errors=True)
        print(
            f"  {case:18s} {table:18s} {run.wall:7.2f} s  cpu {run.cpu:6.2f} s  "
            f"{run.peak_mib:7.1f} MiB",
            flush=True,
        )
        return run

    def compare(self, a: tuple[str, str], b: tuple[str, str], pairs: int = PAIRS) -> str:
        """A B A B ...; the median ratio A/B with min-max, and both sides' CPU seconds."""
        ratios = []
        for _ in range(pairs):
            first = self.run(*a)
            second = self.run(*b)
            ratios.append(first.wall / second.wall)
        side_a, side_b = self.sides[" ".join(a)], self.sides[" ".join(b)]
        line = (
            f"| {a[0]} / {b[0]} | {a[1]} | {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | {side_a.median():.2f} / {side_b.median():.2f}"
            f" | {side_a.median('cpu'):.2f} / {side_b.median('cpu'):.2f} | {side_a.peak:.0f} / "
            f"{side_b.peak:.0f} |"
        )
        self.lines.append(line)
        return line


def ratio_of(line: str) -> float:
    return float(line.split("|")[3].split("x")[0])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def api_case(bench: Bench, rows: int, repeats: int) -> Side:
    """``POST /export`` of a 100k-row XLSX on an embedded server: request to link."""
    port = free_port()
    env = {
        **bench.env(),
        "EXPORTD_DATA_DIR": str(bench.workdir / "api"),
        "EXPORTD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        # `exportd token` signs only for a server it can name: the secret both share.
        "EXPORTD_JWT_SECRET": secrets.token_hex(32),
    }
    exportd = str(Path(PYTHON).parent / "exportd")
    token = subprocess.run(
        [exportd, "token", "--sub", "bench"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    server = subprocess.Popen(
        [exportd, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    side = Side("api_xlsx")
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base)
        headers = {"Authorization": f"Bearer {token}"}
        body = {"type": table_name(rows), "returnType": "url", "fileName": "bench.xlsx"}
        with httpx.Client(timeout=120) as client:
            for attempt in range(repeats):
                started = time.perf_counter()
                answer = client.post(f"{base}/export", json=body, headers=headers)
                seconds = time.perf_counter() - started
                answer.raise_for_status()
                side.runs.append(Run(seconds, 0.0, 0.0))
                print(f"  {'api_xlsx':18s} {rows:>9,} rows  {seconds:7.2f} s", flush=True)
                if attempt == 0:
                    output = bench.workdir / "api.xlsx"
                    output.write_bytes(client.get(answer.json()["url"]).content)
                    side.problems = check(output, bench.references[table_name(rows)])
    finally:
        server.terminate()
        server.wait(timeout=30)
    return side


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/livez", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not come up within 60 s")


def update_readme(text: str) -> None:
    """The README's benchmark table is this run's report (between its bench markers)."""
    readme = HERE.parent / "README.md"
    content = readme.read_text(encoding="utf-8")
    begin, end = "<!-- bench:begin -->\n", "<!-- bench:end -->"
    head, rest = content.split(begin, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(head + begin + text + "\n" + end + tail, encoding="utf-8")


if __name__ == "__main__" and sys.argv[1:] == ["--readme"]:  # after a run: RESULTS.md again
    update_readme((HERE / "RESULTS.md").read_text(encoding="utf-8").rstrip("\n"))
    sys.exit(0)


def main() -> int:
    narrow = [ensure_table(DSN, rows) for rows in (100_000, MILLION, 5 * MILLION)]
    wide, adversarial = ensure_wide_table(DSN), ensure_adversarial_table(DSN)
    tables = [*narrow, wide, adversarial]
    print("tables:", ", ".join(tables), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="exportd-bench-"))
    bench = Bench(workdir)
    bench.write_catalog(tables)
    bench.references = {t: expected(DSN, t) for t in tables}
    one_m, five_m = narrow[1], narrow[2]
    checks: list[tuple[str, bool]] = []
    try:
        small = [bench.run("exportd_xlsx", "small15", validate=False) for _ in range(PAIRS)]
        for _ in range(PAIRS):  # reported among the single runs
            bench.run("exportd_csv", "small15", validate=False)
        xlsx_copy = bench.compare(("exportd_xlsx", one_m), ("psycopg_copy_csv", one_m))
        csv_copy = bench.compare(("exportd_csv", one_m), ("psycopg_copy_csv", one_m))
        duck = bench.compare(("duckdb_excel", one_m), ("exportd_xlsx", one_m))
        # On 1M rows, as the target says: at 100k exportd's fixed start-up (~0.7 s) makes
        # the ratio a measure of start-up, not of writing (measured 7-9x there).
        loop = bench.compare(("xlsxwriter_loop", one_m), ("exportd_xlsx", one_m))
        bench.compare(("exportd_xlsx", wide), ("psycopg_copy_csv", wide))
        bench.compare(("exportd_csv", wide), ("psycopg_copy_csv", wide))
        adversarial_xlsx = bench.run("exportd_xlsx", adversarial)
        bench.run("exportd_csv", adversarial)
        bench.run("exportd_xlsx", five_m)
        api = api_case(bench, API_ROWS, PAIRS)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    xlsx_1m = bench.sides[f"exportd_xlsx {one_m}"]
    xlsx_5m = bench.sides[f"exportd_xlsx {five_m}"]
    csv_1m = bench.sides[f"exportd_csv {one_m}"]
    small_wall = statistics.median(r.wall for r in small)
    small_peak = max(r.peak_mib for r in small)
    checks = [
        (f"XLSX 1M <= 2.0x COPY to a file ({ratio_of(xlsx_copy):.2f}x)", ratio_of(xlsx_copy) <= 2),
        (f"XLSX 1M >= 20x faster than the xlsxwriter row loop ({ratio_of(loop):.1f}x)",
         ratio_of(loop) >= 20),
        (f"XLSX 1M >= 4x faster than DuckDB's excel extension ({ratio_of(duck):.1f}x)",
         ratio_of(duck) >= 4),
        (f"XLSX peak RSS <= 256 MiB, flat 1M -> 5M ({xlsx_1m.peak:.0f} -> {xlsx_5m.peak:.0f} MiB)",
         max(xlsx_1m.peak, xlsx_5m.peak) <= 256 and xlsx_5m.peak <= 1.1 * xlsx_1m.peak),
        # Not a target of the issue: what constant memory means with 40 kB texts in 10% of rows.
        (f"XLSX adversarial table peak RSS <= 256 MiB ({adversarial_xlsx.peak_mib:.0f} MiB)",
         adversarial_xlsx.peak_mib <= 256),
        (f"CSV 1M <= 1.3x COPY to a file ({ratio_of(csv_copy):.2f}x)", ratio_of(csv_copy) <= 1.3),
        (f"CSV 1M peak RSS <= 64 MiB ({csv_1m.peak:.0f} MiB)", csv_1m.peak <= 64),
        (f"15-row XLSX export <= 0.5 s and 120 MiB ({small_wall:.2f} s, {small_peak:.0f} MiB)",
         small_wall <= 0.5 and small_peak <= 120),
        (f"API 100k rows, request to link < 1.5 s ({api.median():.2f} s)", api.median() < 1.5),
        ("every exportd output valid, every column",
         all(not s.problems for s in bench.sides.values() if s.label.startswith("exportd"))
         and not api.problems),
    ]  # fmt: skip
    report = [
        f"`make bench` on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}; whole "
        f"processes, {PAIRS} interleaved pairs per comparison (median ratio, min-max).",
        "",
        "| comparison (A / B) | table | wall A/B | median s A / B | CPU s A / B | peak MiB A / B |",
        "|---|---|---:|---:|---:|---:|",
        *bench.lines,
        "",
        "| single runs | wall s | CPU s | peak MiB | valid |",
        "|---|---:|---:|---:|---|",
        *[
            f"| {side.label} | {side.median():.2f} | {side.median('cpu'):.2f} | {side.peak:.0f} | "
            f"{'ok' if not side.problems else 'FAIL: ' + '; '.join(side.problems)} |"
            for side in bench.sides.values()
        ],
        f"| api_xlsx {API_ROWS:,} rows, request to link | {api.median():.2f} | - | - | "
        f"{'ok' if not api.problems else 'FAIL: ' + '; '.join(api.problems)} |",
        "",
        *[f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks],
    ]
    text = "\n".join(report)
    (HERE / "RESULTS.md").write_text(text + "\n", encoding="utf-8")
    update_readme(text)
    print()
    print(text)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
