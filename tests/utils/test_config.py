"""Recorded stage configurations and what a resume may change."""

import pytest
import yaml

from usrasr.pretrain.config import PretrainConfig
from usrasr.utils.errors import UsrasrError


def test_resume_needs_the_recorded_config_except_what_may_change(tmp_path):
    PretrainConfig.load(None, {"steps": 10}).record(tmp_path, resume=False)
    with pytest.raises(UsrasrError, match="already holds a run"):
        PretrainConfig().record(tmp_path, resume=False)
    PretrainConfig.load(None, {"steps": 20}).record(tmp_path, resume=True, may_change=("steps",))
    with pytest.raises(UsrasrError, match=r"different config \(lr\)"):
        PretrainConfig.load(None, {"steps": 20, "lr": 0.5}).record(tmp_path, resume=True)


def test_an_option_added_since_a_run_was_recorded_counts_as_its_default(tmp_path):
    recorded = PretrainConfig().to_dict()
    del recorded["speaker_adversary_weight"]  # a run from before the option existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(recorded))
    PretrainConfig().record(tmp_path, resume=True)
    with pytest.raises(UsrasrError, match="speaker_adversary_weight"):
        PretrainConfig.load(None, {"speaker_adversary_weight": 0.5}).record(tmp_path, resume=True)
