"""The three images and their install sets, as the Dockerfiles declare them: one place for the
tests that read the Dockerfiles and the test that installs each set into a clean venv."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Image:
    name: str
    directory: Path

    @property
    def dockerfile(self) -> Path:
        return self.directory / "Dockerfile"

    @property
    def extras_file(self) -> Path:
        """The image's install set, bind-mounted into its build (scripts/image-build.sh)."""
        return self.directory / "extras.txt"

    @property
    def extras(self) -> str:
        lines = self.extras_file.read_text(encoding="utf-8").splitlines()
        (extras,) = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return extras


IMAGES = {
    "api": Image("api", ROOT / "api"),
    "operator": Image("operator", ROOT / "operator"),
    "exporter": Image("exporter", ROOT / "exporter-image"),
}
