import pytest

from usrasr.lang.inventory import project_phone_ipa, ranked_phones, read_phone_ipa
from usrasr.lang.phones import ARPABET
from usrasr.utils.errors import UsrasrError


def test_every_project_phone_has_its_ipa():
    ipa = project_phone_ipa()
    assert set(ipa) == set(ARPABET)
    assert (ipa["SH"], ipa["IY"], ipa["NG"]) == ("ʃ", "i", "ŋ")


def test_a_phone_present_in_the_source_inventory_maps_to_itself():
    targets = {"S": "s", "SH": "ʃ", "IY": "i", "M": "m"}
    ranked = ranked_phones(targets, ["m", "ʃ", "i", "s", "a"], 1)
    assert ranked == {"S": [("s", 0.0)], "SH": [("ʃ", 0.0)], "IY": [("i", 0.0)], "M": [("m", 0.0)]}


def test_a_missing_phone_maps_to_its_articulatory_neighbour():
    # no dental fricative and no lax /ɪ/ in the source: the nearest voiced fricative and close vowel
    ranked = ranked_phones({"DH": "ð", "IH": "ɪ", "P": "p"}, ["z", "s", "i", "a", "p", "k"], 6)
    assert {name: near[0][0] for name, near in ranked.items()} == {"DH": "z", "IH": "i", "P": "p"}


def test_phones_are_ranked_by_their_articulatory_distance():
    from panphon.distance import Distance

    sources = ["z", "s", "i", "a", "p", "k"]
    (near,) = ranked_phones({"DH": "ð"}, sources, 4).values()
    distance = Distance().weighted_feature_edit_distance
    expected = sorted(sources, key=lambda s: distance("ð", s))[:4]
    assert [p for p, _ in near] == expected
    assert [d for _, d in near] == sorted(distance("ð", s) for s in sources)[:4]


def test_phone_ipa_table_errors(tmp_path):
    path = tmp_path / "ipa.txt"
    path.write_text("a ɑ\nb\n", encoding="utf-8")
    with pytest.raises(UsrasrError, match=":2: expected"):
        read_phone_ipa(path)
    path.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(UsrasrError, match="lists no phones"):
        read_phone_ipa(path)
    with pytest.raises(UsrasrError, match="empty"):
        ranked_phones({"a": "a"}, [], 1)
