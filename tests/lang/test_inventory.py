import pytest

from usrasr.lang.inventory import nearest_phones, project_phone_ipa, read_phone_ipa
from usrasr.lang.phones import ARPABET
from usrasr.utils.errors import UsrasrError


def test_every_project_phone_has_its_ipa():
    ipa = project_phone_ipa()
    assert set(ipa) == set(ARPABET)
    assert (ipa["SH"], ipa["IY"], ipa["NG"]) == ("ʃ", "i", "ŋ")


def test_a_phone_present_in_the_source_inventory_maps_to_itself():
    targets = {"S": "s", "SH": "ʃ", "IY": "i", "M": "m"}
    assert nearest_phones(targets, ["m", "ʃ", "i", "s", "a"]) == {"S": "s", "SH": "ʃ", "IY": "i", "M": "m"}


def test_a_missing_phone_maps_to_its_articulatory_neighbour():
    # no dental fricative and no lax /ɪ/ in the source: the nearest voiced fricative and close vowel
    mapped = nearest_phones({"DH": "ð", "IH": "ɪ", "P": "p"}, ["z", "s", "i", "a", "p", "k"])
    assert mapped == {"DH": "z", "IH": "i", "P": "p"}


def test_phone_ipa_table_errors(tmp_path):
    path = tmp_path / "ipa.txt"
    path.write_text("a ɑ\nb\n", encoding="utf-8")
    with pytest.raises(UsrasrError, match=":2: expected"):
        read_phone_ipa(path)
    path.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(UsrasrError, match="lists no phones"):
        read_phone_ipa(path)
    with pytest.raises(UsrasrError, match="empty"):
        nearest_phones({"a": "a"}, [])
