"""The top-level guard: a bug is one line, a traceback file and exit 1; ``--debug`` shows it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import twinloop.cli.cohort as cohort_cli
from twinloop.cli.app import app
from twinloop.errors import InputError

runner = CliRunner()


def crash(message: str):
    def describe(*args, **kwargs):
        raise KeyError(message)

    return describe


def test_an_unexpected_exception_is_one_line_and_a_traceback_file(monkeypatch, tmp_path):
    monkeypatch.setattr(cohort_cli, "summarize", crash("postgresql://ann:s3cret@db/x [/bold]"))
    (tmp_path / "p").mkdir()
    result = runner.invoke(app, ["cohort", "describe", str(tmp_path / "p")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: twinloop failed unexpectedly; this is a bug")
    assert "KeyError" in lines[0] and "[/bold]" in lines[0] and "s3cret" not in lines[0]
    report = Path(re.search(r"traceback is in (\S+);", lines[0]).group(1))
    text = report.read_text()
    report.unlink()
    assert "Traceback (most recent call last)" in text and "def describe" not in text and "raise KeyError" in text
    assert "s3cret" not in text and "cohort describe" in text


def test_debug_lets_the_exception_through(monkeypatch, tmp_path):
    monkeypatch.setattr(cohort_cli, "summarize", crash("boom"))
    result = runner.invoke(app, ["--debug", "cohort", "describe", str(tmp_path)])
    assert isinstance(result.exception, KeyError)
    monkeypatch.setenv("TWINLOOP_DEBUG", "1")
    assert isinstance(runner.invoke(app, ["cohort", "describe", str(tmp_path)]).exception, KeyError)


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_an_escaped_refusal_is_a_clean_error(monkeypatch, tmp_path, debug):
    def refuse(*args, **kwargs):
        raise InputError("field 'n' must be finite; got inf.\nsecond line")

    import twinloop.models.registry

    monkeypatch.setattr(twinloop.models.registry, "sources", refuse)  # `twinloop models` does not catch it itself
    result = runner.invoke(app, [*debug, "models"])
    if debug:
        assert isinstance(result.exception, InputError)
    else:
        assert result.exit_code == 2 and result.output.startswith("error: field 'n' must be finite")
        assert "Traceback" not in result.output


def test_a_system_refusal_names_the_file_and_is_not_called_a_bug(monkeypatch, tmp_path):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "p" / "manifest.json"))

    monkeypatch.setattr(cohort_cli, "summarize", denied)
    (tmp_path / "p").mkdir()
    result = runner.invoke(app, ["cohort", "describe", str(tmp_path / "p")])
    assert result.exit_code == 2 and "bug" not in result.output
    assert (
        result.output.strip()
        == f"error: Permission denied: {tmp_path / 'p' / 'manifest.json'}; check the path and its permissions."
    )


def test_one_mapper_turns_exceptions_into_exit_codes(tmp_path):
    from twinloop.cli._errors import EXIT_BUG, EXIT_REFUSED, refusal

    assert (EXIT_REFUSED, EXIT_BUG) == (2, 1)
    assert refusal(InputError("--n must be >= 1; got 0.")) == "--n must be >= 1; got 0."
    denied = PermissionError(13, "Permission denied", str(tmp_path / "out.csv"))
    assert refusal(denied) == f"Permission denied: {tmp_path / 'out.csv'}; check the path and its permissions."
    assert refusal(KeyError("x")) is None and refusal(OSError("no file named")) is None


def test_no_command_maps_domain_errors_itself():
    """Commands raise; only the root guard turns a TwinloopError into a message and an exit code."""
    import ast

    import twinloop.cli as cli

    folder = Path(cli.__file__).parent
    for path in sorted(folder.glob("*.py")):
        if path.name in ("_errors.py", "_guard.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                caught = ast.unparse(node.type)
                assert "TwinloopError" not in caught, f"{path.name}:{node.lineno} catches {caught}"
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "fail":
                raise AssertionError(f"{path.name}:{node.lineno} calls fail(); raise an InputError instead")
