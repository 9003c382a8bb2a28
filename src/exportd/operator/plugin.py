"""``kubectl exportd``: a kubectl plugin for ExportRequests (installed as ``kubectl-exportd``).

    kubectl exportd get NAME [-o json]       phase, rows, reason and message, link, conditions
    kubectl exportd download NAME [-f FILE]  the file behind status.url (default: spec.fileName)
    kubectl exportd cancel NAME              spec.cancel: true (the Job stops, no file is kept)
    kubectl exportd rerun NAME [--name NEW]  a new request with the same spec
    kubectl exportd logs NAME [-f]           the export pods' logs (kubectl logs job/<jobName>)

``-n/--namespace``, ``--context`` and ``--kubeconfig`` work as with kubectl; the kubeconfig is
read the way kubectl reads it (``KUBECONFIG``, else ``~/.kube/config``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from exportd.contract import exportrequest as er

SPEC_KEPT_ON_RERUN = ("type", "format", "returnType", "fileName", "variables", "email")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl exportd", description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--namespace")
    parser.add_argument("--context")
    parser.add_argument("--kubeconfig")
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("get", help="show an ExportRequest's outcome")
    get.add_argument("name")
    get.add_argument("-o", "--output", choices=["text", "json"], default="text")
    download = commands.add_parser("download", help="download the exported file")
    download.add_argument("name")
    download.add_argument("-f", "--file", help="where to write it (default: spec.fileName)")
    commands.add_parser("cancel", help="cancel an export").add_argument("name")
    rerun = commands.add_parser("rerun", help="run the same export again as a new request")
    rerun.add_argument("name")
    rerun.add_argument("--name", dest="new_name", help="the new request's name")
    logs = commands.add_parser("logs", help="the export pods' logs")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--pod-running-timeout", default="20s", help="as kubectl logs")
    return parser


class Plugin:
    def __init__(self, args: argparse.Namespace) -> None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig, context=args.context
        )
        self.objects = client.CustomObjectsApi()
        self.args = args
        contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig
        )
        chosen = next((c for c in contexts if c["name"] == args.context), active)
        default = (chosen.get("context") or {}).get("namespace") or "default"
        self.namespace = str(args.namespace or default)

    def read(self, name: str) -> dict[str, Any]:
        body = self.objects.get_namespaced_custom_object(
            er.GROUP, er.VERSION, self.namespace, er.PLURAL, name
        )
        return cast(dict[str, Any], body)

    def get(self) -> int:
        body = self.read(self.args.name)
        status = body.get("status") or {}
        if self.args.output == "json":
            print(json.dumps(status, indent=2, sort_keys=True))
            return 0
        spec = body.get("spec") or {}
        shown = {
            "Name": self.args.name,
            "Type": spec.get("type"),
            "Format": status.get("format"),
            "Phase": status.get("phase") or "Pending",
            "Reason": status.get("reason"),
            "Message": status.get("message"),
            "Rows": status.get("rows"),
            "Duration": status.get("duration"),
            "Job": status.get("jobName"),
            "URL": status.get("url"),
            "Expires": status.get("expiresAt"),
        }
        for label, value in shown.items():
            if value is not None:
                print(f"{label + ':':<10}{value}")
        for condition in status.get("conditions") or []:
            detail = f" ({condition['reason']})" if condition.get("reason") else ""
            print(f"{'Condition:':<10}{condition['type']}={condition['status']}{detail}")
        return 0

    def download(self) -> int:
        body = self.read(self.args.name)
        url = (body.get("status") or {}).get("url")
        if not url:
            phase = (body.get("status") or {}).get("phase") or "Pending"
            print(f"error: {self.args.name} has no download link (phase {phase})", file=sys.stderr)
            return 1
        target = Path(self.args.file or (body.get("spec") or {}).get("fileName") or "export")
        with urllib.request.urlopen(url, timeout=300) as answer, target.open("wb") as out:  # noqa: S310 - the link the operator signed
            shutil.copyfileobj(answer, out)
        print(f"{target} ({target.stat().st_size} bytes)")
        return 0

    def cancel(self) -> int:
        self.objects.patch_namespaced_custom_object(
            er.GROUP,
            er.VERSION,
            self.namespace,
            er.PLURAL,
            self.args.name,
            {"spec": {"cancel": True}},
        )
        print(f"exportrequest/{self.args.name} cancelled")
        return 0

    def rerun(self) -> int:
        spec = self.read(self.args.name).get("spec") or {}
        new_name = self.args.new_name or f"{self.args.name}-rerun-{os.urandom(3).hex()}"[:63]
        body = {
            "apiVersion": er.API_VERSION,
            "kind": er.KIND,
            "metadata": {"name": new_name, "namespace": self.namespace},
            "spec": {key: spec[key] for key in SPEC_KEPT_ON_RERUN if key in spec},
        }
        self.objects.create_namespaced_custom_object(
            er.GROUP, er.VERSION, self.namespace, er.PLURAL, body
        )
        print(f"exportrequest/{new_name} created")
        return 0

    def logs(self) -> int:
        job = (self.read(self.args.name).get("status") or {}).get("jobName")
        if not job:
            print(f"error: {self.args.name} has no Job yet", file=sys.stderr)
            return 1
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            print("error: kubectl is not on PATH", file=sys.stderr)
            return 1
        command = [kubectl, "logs", f"job/{job}", "-n", self.namespace, "--all-containers"]
        command += [f"--pod-running-timeout={self.args.pod_running_timeout}"]
        command += ["--follow"] if self.args.follow else []
        command += ["--context", self.args.context] if self.args.context else []
        command += ["--kubeconfig", self.args.kubeconfig] if self.args.kubeconfig else []
        print(f"logs of job/{job} (the export of {self.args.name})", file=sys.stderr, flush=True)
        os.execv(kubectl, command)  # noqa: S606 - kubectl itself, found on PATH
        return 0  # pragma: no cover


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plugin = Plugin(args)
    try:
        result: int = getattr(plugin, args.command)()
    except ApiException as exc:
        reason = json.loads(exc.body or "{}").get("message") if exc.body else exc.reason
        print(f"error: {reason}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
