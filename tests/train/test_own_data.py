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


def test_show_config_lists_every_key_with_its_meaning_as_shipped():
    from usrasr.train.config import TrainConfig
    from usrasr.utils.shipped import SHIPPED_DATA

    result = CliRunner().invoke(cli, ["train", "--show-config"])
    assert result.exit_code == 0 and result.stdout == TrainConfig.show()
    assert all(TrainConfig.meanings().get(key) for key in TrainConfig().to_dict())
    shipped = (SHIPPED_DATA / "conf" / "train.yaml").read_text(encoding="utf-8")
    assert shipped.split("\n\n", 1)[1] == TrainConfig.show()  # past its header: the same text


def test_the_tiny_preset_is_a_valid_smaller_config(tmp_path):
    from usrasr.train.config import TrainConfig
    from usrasr.utils.shipped import SHIPPED_DATA

    tiny = TrainConfig.load(SHIPPED_DATA / "conf" / "train-tiny.yaml")
    assert tiny.restarts < TrainConfig().restarts and tiny.ctc_steps < TrainConfig().ctc_steps
    code, err = train("--corpus", tmp_path, "--out", tmp_path / "exp", "--preset", "tiny", "--config",
                      SHIPPED_DATA / "conf" / "train.yaml")
    assert code == 2 and "not both" in err


def quickstart_own_data_commands() -> list[str]:
    """The command lines of the "Your own data" block of docs/quickstart.md, as written."""
    from usrasr.utils.shipped import SHIPPED_DATA

    doc = (SHIPPED_DATA.parent / "docs" / "quickstart.md").read_text(encoding="utf-8")
    block = doc.split("## Your own data", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.strip().splitlines()]


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="espeak-ng makes the audio")
def test_the_quickstart_for_ones_own_data_runs_as_written(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    from tests.prepare.test_prepare_inputs import random_text

    sentences = random_text(2000)
    (tmp_path / "corpus.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    (tmp_path / "recordings").mkdir()
    spoken = sentences[:30]
    for i, sentence in enumerate(spoken):
        subprocess.run(["espeak-ng", "-w", str(tmp_path / "recordings" / f"utt{i:02d}.wav"), sentence], check=True)
    (tmp_path / "ref.txt").write_text("".join(f"utt{i:02d} {s}\n" for i, s in enumerate(spoken)))
    env = {**os.environ, "USRASR_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    commands = quickstart_own_data_commands()
    assert [c.split()[1] for c in commands] == ["prepare", "prepare", "check", "train", "decode", "evaluate"]
    for command in commands:
        result = subprocess.run(command.replace("usrasr", f"{sys.executable} -m usrasr", 1), shell=True,
                                cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, (command, result.stderr[-3000:])
    hyp = (tmp_path / "hyp.txt").read_text().splitlines()
    assert sorted(line.split()[0] for line in hyp) == [f"utt{i:02d}" for i in range(30)]
    assert not (tmp_path / "data" / "my" / "manifests" / "cuts_test.jsonl.gz").exists()
    assert "%WER" in result.stdout
    # the run recorded its corpus: resuming it on another one is refused before any work
    shutil.copytree(tmp_path / "data" / "my", tmp_path / "data" / "other")
    resumed = subprocess.run([sys.executable, "-m", "usrasr", "train", "--corpus", "data/other", "--out", "exp/my",
                              "--no-score", "--preset", "tiny", "--resume"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 2 and "--resume with a different corpus (path changed" in resumed.stderr
