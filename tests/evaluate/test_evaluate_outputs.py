"""``usrasr evaluate --out-dir`` where nothing can be written: one line, no traceback."""

from pathlib import Path

from click.testing import CliRunner

from usrasr.cli import cli


def test_out_dir_that_cannot_be_written_is_a_one_line_error(tmp_path):
    (tmp_path / "ref.txt").write_text("u1 A B\n")
    (tmp_path / "hyp.txt").write_text("u1 A C\n")
    out_dir = Path("/proc/usrasr-no-such-dir")  # root writes wherever chmod forbids; /proc takes nothing
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "ref.txt"), str(tmp_path / "hyp.txt"),
                                      "--out-dir", str(out_dir)])
    assert result.exit_code == 2, result.output
    assert "cannot write" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
