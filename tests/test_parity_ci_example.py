"""The example GitHub Actions workflow parses and only uses verbs and options the CLI really has."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "examples" / "ci" / "github-actions.yml"


def _edgefuse_commands(steps: list[dict]) -> list[list[str]]:
    cmds = []
    for step in steps:
        script = step.get("run", "").replace("\\\n", " ")
        for line in script.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("edgefuse "):
                cmds.append(shlex.split(line)[1:])
    return cmds


def test_workflow_runs_export_quantize_validate_and_uploads_reports():
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in wf[True] or "pull_request" in wf.get("on", {})  # YAML 1.1 reads `on` as True
    steps = wf["jobs"]["validate"]["steps"]
    verbs = [c[0] for c in _edgefuse_commands(steps)]
    assert verbs == ["export", "quantize", "quantize", "validate"]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and "reports/validate/" in upload["with"]["path"]
    validate_step = next(s for s in steps if s.get("id") == "validate")
    assert "if" not in validate_step  # a failed gate (exit 1) fails the job


def test_workflow_options_exist_in_the_cli():
    import typer.main

    from edgefuse.cli import app

    group = typer.main.get_command(app)
    for args in _edgefuse_commands(yaml.safe_load(WORKFLOW.read_text())["jobs"]["validate"]["steps"]):
        cmd = group.commands[args[0]]
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        used = {a for a in args[1:] if a.startswith("-")}
        assert used <= known, (args[0], used - known)
