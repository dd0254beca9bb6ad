"""What data/ ships agrees with the code that reads it."""

from __future__ import annotations

import yaml
import pytest

from usrasr.lang.phones import ARPABET, IPA_TO_ARPABET, PHONES, SILENCE, SPOKEN_NOISE
from usrasr.pretrain.config import PretrainConfig
from usrasr.train.config import TrainConfig
from usrasr.utils.shipped import SHIPPED_DATA


@pytest.mark.parametrize("name, config", [("train", TrainConfig), ("pretrain", PretrainConfig)])
def test_shipped_configs_hold_every_key_at_its_default(name, config):
    shipped = yaml.safe_load((SHIPPED_DATA / "conf" / f"{name}.yaml").read_text(encoding="utf-8"))
    assert shipped == config().to_dict()
    assert config.load(SHIPPED_DATA / "conf" / f"{name}.yaml") == config()


def test_the_phone_tables_map_into_the_inventory():
    assert len(ARPABET) == 39 and PHONES == (*ARPABET, SILENCE, SPOKEN_NOISE)
    assert all(p in PHONES for phones in IPA_TO_ARPABET.values() for p in phones)
    assert IPA_TO_ARPABET[""] == (SILENCE,)  # espeak's pauses
