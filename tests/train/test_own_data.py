"""`usrasr train` on a user's own corpus: every bad config or corpus is refused in one line
before any work and before anything is written to --out."""

import pytest
import soundfile as sf
from click.testing import CliRunner

from tests.prepare.test_prepare_inputs import _tone
from usrasr.cli import cli


def train(*args):
    result = CliRunner().invoke(cli, ["train", *map(str, args)])
    return result.exit_code, result.stderr


@pytest.mark.parametrize("override", ["optimizer=sgd", "init=foo", "restarts=0", "num_units=0", "merge_runs=maybe",
                                      "ctc_steps=0", "arch=foo"])
def test_a_bad_config_value_is_one_line_before_anything_is_written(tmp_path, override):
    code, err = train("--corpus", tmp_path, "--out", tmp_path / "exp", "--set", override)
    assert code == 2 and len(err.strip().splitlines()) == 1 and override.split("=")[0] in err, err
    assert not (tmp_path / "exp").exists()


def test_a_config_file_that_is_not_a_mapping_is_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text("- restarts: 2\n")
    code, err = train("--corpus", tmp_path, "--out", tmp_path / "exp", "--config", tmp_path / "c.yaml")
    assert code == 2 and "must be a mapping" in err and len(err.strip().splitlines()) == 1


def test_a_corpus_without_lms_fails_before_the_run_directory_is_claimed(tmp_path):
    (tmp_path / "src").mkdir()
    sf.write(tmp_path / "src" / "a.wav", _tone(1.0, 16000), 16000)
    assert CliRunner().invoke(cli, ["prepare", "audio", str(tmp_path / "src"), "--out", str(tmp_path / "c")]).exit_code == 0
    code, err = train("--corpus", tmp_path / "c", "--out", tmp_path / "exp", "--no-score")
    assert code == 2 and "phone LM" in err and "usrasr prepare text" in err, err
    assert not (tmp_path / "exp" / "config.yaml").exists()
    code, err = train("--corpus", tmp_path / "c", "--out", tmp_path / "exp")  # scoring: a test split too
    assert code == 2 and "test cuts" in err and "--no-score" in err
