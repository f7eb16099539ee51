"""`stats`, `status` and `compact` on an output they cannot read: one line that names the command and
the output, exit status 2, no traceback and nothing on stdout (`commands/reading.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sjd_batch import cli


@pytest.mark.parametrize("command", ["stats", "status", "compact"])
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_an_unreadable_output_is_one_line_and_exit_2(command: str, json_flag: list[str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert cli.main([command, str(not_a_folder), *json_flag]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(f"sjd-batch {command}: error: ") and str(not_a_folder) in err


@pytest.mark.parametrize("command", ["status", "compact"])
def test_a_folder_without_a_job_is_named(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main([command, str(tmp_path)]) == 2
    assert f"{tmp_path} is not a job output" in capsys.readouterr().err
