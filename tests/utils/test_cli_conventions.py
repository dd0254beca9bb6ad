"""Command-line conventions: -q/-v anywhere, exit codes 2 (bad input) and 130 (interrupted)."""

import logging

from click.testing import CliRunner

from usrasr.cli import cli
from usrasr.utils.console import log


def test_quiet_and_verbose_are_accepted_after_the_sub_command(tmp_path):
    (tmp_path / "ref.txt").write_text("u1 A B\n")
    for args, level in ((["-q"], logging.WARNING), (["-v"], logging.DEBUG)):
        result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "ref.txt"), str(tmp_path / "ref.txt"), *args])
        assert result.exit_code == 0, result.output
        assert log.level == level
    result = CliRunner().invoke(cli, ["prepare", "text", str(tmp_path / "missing.txt"), "--out", str(tmp_path), "-q"])
    assert result.exit_code == 2 and "text corpus not found" in result.stderr


def test_ctrl_c_exits_130_in_one_line(tmp_path, monkeypatch):
    import usrasr.evaluate.report as report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "evaluate_transcripts", interrupted)
    result = CliRunner().invoke(cli, ["evaluate", "a", "b"])
    assert result.exit_code == 130 and result.stderr.strip() == "usrasr: interrupted"


def test_a_file_system_error_is_one_line_with_exit_2(tmp_path, monkeypatch):
    import usrasr.evaluate.report as report

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/some/file")

    monkeypatch.setattr(report, "evaluate_transcripts", unreadable)
    result = CliRunner().invoke(cli, ["evaluate", "a", "b"])
    assert result.exit_code == 2 and result.stderr.strip() == "Error: /some/file: Permission denied"
