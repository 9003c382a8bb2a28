"""``make bench``: exportd's XLSX and CSV paths against the usual ways, on this machine, in one go.

Creates the benchmark tables in PostgreSQL when missing, runs every case as its own process
(wall time around it; peak RSS is the process's own VmHWM, see ``cases.peak_rss_line``),
validates every output against the table (row count and column checksums), runs a 100k-row
export through the API (request to link), and prints one table with the ratios to each
baseline and PASS/FAIL per target. The same table is written to ``bench/RESULTS.md``. Fast
cases run three times (median), spread between the slow baselines, which run once.
"""

from __future__ import annotations

import json
import os
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
from tables import ensure_table, table_name
from validate import Checksums, check, expected

HERE = Path(__file__).parent
ROOT = HERE.parent
PYTHON = sys.executable
FAST_REPEATS = 3
API_ROWS = 100_000


@dataclass
class Result:
    case: str
    rows: int
    seconds: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak(self) -> float:
        return max(self.peak_mib)


def run_case(case: str, rows: int, output: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, the process's own VmHWM) of one case process."""
    started = time.perf_counter()
    done = subprocess.run(
        [PYTHON, str(HERE / "cases.py"), case, str(rows), str(output)],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{case} on {rows} rows exited with {done.returncode}: {done.stderr}")
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("VmHWM_KIB="), last
    return elapsed, int(last.split("=")[1]) / 1024


def measure(case: str, rows: int, workdir: Path, reference: Checksums) -> Result:
    """One run of a case, its output validated."""
    output = workdir / f"{case}-{rows}{'.csv' if case.endswith('csv') else '.xlsx'}"
    seconds, peak = run_case(case, rows, output)
    problems = check(output, reference)
    output.unlink()
    print(f"  {case:18s} {rows:>9,} rows  {seconds:7.2f} s  {peak:7.1f} MiB", flush=True)
    return Result(case, rows, [seconds], [peak], problems)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def api_case(rows: int, repeats: int, workdir: Path, reference: Checksums) -> Result:
    """``POST /export`` for a 100k-row XLSX on an embedded server: request to link."""
    data_dir = workdir / "api"
    catalog = workdir / "bench-catalog.yaml"
    catalog.write_text(
        json.dumps(
            {
                "types": {
                    "benchRows": {
                        "source": "benchpg",
                        "query": f"SELECT * FROM {table_name(rows)} ORDER BY id",
                        "variables": {},
                    }
                }
            }
        ),
        encoding="utf-8",
    )
    port = free_port()
    env = {
        **os.environ,
        "EXPORTD_DATA_DIR": str(data_dir),
        "EXPORTD_CATALOG_PATH": str(catalog),
        "EXPORTD_SOURCES": json.dumps({"benchpg": {"kind": "postgres", "dsn": DSN}}),
        "EXPORTD_PUBLIC_URL": f"http://127.0.0.1:{port}",
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
    result = Result("api_xlsx", rows)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base)
        headers = {"Authorization": f"Bearer {token}"}
        body = {"type": "benchRows", "returnType": "url", "fileName": "bench.xlsx"}
        with httpx.Client(timeout=120) as client:
            for attempt in range(repeats):
                started = time.perf_counter()
                answer = client.post(f"{base}/export", json=body, headers=headers)
                seconds = time.perf_counter() - started
                answer.raise_for_status()
                url = answer.json()["url"]
                result.seconds.append(seconds)
                print(f"  {'api_xlsx':18s} {rows:>9,} rows  {seconds:7.2f} s", flush=True)
                if attempt == 0:
                    output = workdir / "api.xlsx"
                    output.write_bytes(client.get(url).content)
                    result.problems = check(output, reference)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return result


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


def ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.1f}x"


def report(results: dict[tuple[str, int], Result]) -> str:
    def seconds(case: str, rows: int) -> float | None:
        found = results.get((case, rows))
        return found.median if found else None

    lines = [
        "| case | rows | seconds | rows/s | peak MiB | xlsxwriter loop / this | "
        "DuckDB excel / this | this / COPY csv | valid |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (case, rows), result in results.items():
        peak = f"{result.peak:.0f}" if result.peak_mib else "-"
        valid = "ok" if not result.problems else "FAIL: " + "; ".join(result.problems)
        lines.append(
            f"| {case} | {rows:,} | {result.median:.2f} | {rows / result.median:,.0f} | {peak} | "
            f"{ratio(seconds('xlsxwriter_loop', rows), result.median)} | "
            f"{ratio(seconds('duckdb_excel', rows), result.median)} | "
            f"{ratio(result.median, seconds('psycopg_copy_csv', rows))} | {valid} |"
        )
    lines += ["", *targets(results)]
    return "\n".join(lines)


def targets(results: dict[tuple[str, int], Result]) -> list[str]:
    million = 1_000_000
    fast = results[("exportd_xlsx", million)]
    csv = results[("exportd_csv", million)]
    checks = [
        (
            "XLSX 1M >= 15x faster than the xlsxwriter row loop",
            results[("xlsxwriter_loop", million)].median / fast.median >= 15,
        ),
        (
            "XLSX 1M >= 3x faster than DuckDB's excel extension",
            results[("duckdb_excel", million)].median / fast.median >= 3,
        ),
        ("XLSX 1M peak RSS <= 256 MiB", fast.peak <= 256),
        (
            "CSV 1M <= 1.3x the time of COPY to a file",
            csv.median <= 1.3 * results[("psycopg_copy_csv", million)].median,
        ),
        ("CSV 1M peak RSS <= 64 MiB", csv.peak <= 64),
    ]
    api = results.get(("api_xlsx", API_ROWS))
    if api is not None:
        checks.append(("API 100k rows, request to link < 2 s", api.median < 2))
    five = results.get(("exportd_xlsx", 5 * million))
    if five is not None:
        checks.append(
            ("XLSX peak RSS at 5M within 10% of 1M", abs(five.peak - fast.peak) <= 0.1 * fast.peak)
        )
    checks.append(("every output valid", all(not r.problems for r in results.values())))
    return [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks]


# Fast cases run three times each, spread between the slow baselines, so that the load of a
# shared machine falls on both sides of each ratio alike; their median is reported.
FAST_ROUND = ("exportd_xlsx", "exportd_csv", "psycopg_copy_csv")
PLAN: list[tuple[str, int]] = [
    *[(case, 100_000) for case in FAST_ROUND],
    ("duckdb_excel", 100_000),
    *[(case, 100_000) for case in FAST_ROUND],
    ("xlsxwriter_loop", 100_000),
    ("pandas_openpyxl", 100_000),
    *[(case, 100_000) for case in FAST_ROUND],
    *[(case, 1_000_000) for case in FAST_ROUND],
    ("duckdb_excel", 1_000_000),
    *[(case, 1_000_000) for case in FAST_ROUND],
    ("xlsxwriter_loop", 1_000_000),
    *[(case, 1_000_000) for case in FAST_ROUND],
    ("exportd_xlsx", 5_000_000),
]


def main() -> int:
    sizes = sorted({rows for _, rows in PLAN})
    print("tables:", ", ".join(ensure_table(DSN, rows) for rows in sizes), flush=True)
    references = {rows: expected(DSN, table_name(rows)) for rows in sizes}
    workdir = Path(tempfile.mkdtemp(prefix="exportd-bench-"))
    results: dict[tuple[str, int], Result] = {}
    try:
        for case, rows in PLAN:
            result = measure(case, rows, workdir, references[rows])
            merged = results.setdefault((case, rows), Result(case, rows))
            merged.seconds += result.seconds
            merged.peak_mib += result.peak_mib
            merged.problems = merged.problems or result.problems
        if shutil.which(str(Path(PYTHON).parent / "exportd")):
            results[("api_xlsx", API_ROWS)] = api_case(
                API_ROWS, FAST_REPEATS, workdir, references[API_ROWS]
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = report(results)
    header = f"`make bench` on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}:\n\n"
    (HERE / "RESULTS.md").write_text(header + table + "\n", encoding="utf-8")
    print()
    print(table)
    return 0 if "FAIL" not in table else 1


if __name__ == "__main__":
    sys.exit(main())
