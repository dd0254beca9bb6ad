"""`usrasr prepare multilingual`: universal phones, a tiny two-language corpus, resumability,
bad input, and that no English text or voice goes in."""

import gzip
import json
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from lhotse import load_manifest

import usrasr.prepare.multilingual as multilingual
from usrasr.cli import cli
from usrasr.corpus.reader import load_audio
from usrasr.lang.ipa import articulatory_features, ipa_segments
from usrasr.lang.symbols import SymbolTable
from usrasr.prepare.multilingual import TextSource, normalize_sentence, prepare_multilingual
from usrasr.prepare.sources import FORTUNES_DIR
from usrasr.prepare.tts_engines import ENGINES
from usrasr.utils.errors import UsrasrError

pytestmark = pytest.mark.skipif(not ENGINES["espeak-ng"].is_installed(), reason="espeak-ng is not installed")

# Short texts made here: the tiny corpus needs no installed text package.
TEXTS = {
    "cs": ["Dnes ráno svítilo slunce nad řekou. Děti šly do školy pěšky. Babička upekla jablečný koláč. "
           "Vlak přijel do stanice včas. Na zahradě kvetou růže a tulipány. "
           "Pes štěkal na pošťáka celé odpoledne. Můj bratr hraje na kytaru. V zimě často sněží na horách. "
           "Kočka spí na teplé peci. "
           "Zítra pojedeme k moři na dovolenou. Ve sklepě jsou staré knihy. Čaj je ještě příliš horký."],
    "fi": ["Tänään aurinko paistoi järven yllä. Lapset kävelivät kouluun aamulla. Isoäiti leipoi hyvää "
           "omenapiirakkaa. Juna saapui asemalle ajallaan. Puutarhassa kukkivat ruusut ja tulppaanit. "
           "Koira haukkui postinkantajalle koko iltapäivän. Veljeni soittaa kitaraa illalla. Talvella "
           "vuorilla sataa usein lunta. Kissa nukkuu lämpimällä uunilla. Huomenna lähdemme merelle lomalle. "
           "Kellarissa on vanhoja kirjoja. Tee on vielä liian kuumaa juotavaksi."],
}
TINY = dict(hours=0.01, heldout_fraction=0.5, engines=("espeak-ng",), num_workers=1)


def paragraph_sources(texts):
    def sources(language):
        if language not in texts:
            return []
        return [TextSource(f"test-{language}", Path("/nonexistent"), lambda _path: iter(texts[language]))]
    return sources


def build(out: Path, texts=TEXTS, **options) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(multilingual, "language_text_sources", paragraph_sources(texts))
        patch.setattr(multilingual, "_tree_stamp", lambda _path: "test")
        return prepare_multilingual(out, list(texts), **{**TINY, **options})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("multilingual") / "corpus"
    build(out)
    return out


@pytest.mark.parametrize("ipa, phones", [
    ("pr̝̊ˈiːkaz", ["p", "r", "i", "k", "a", "z"]),  # length, stress and stacked diacritics
    ("tʲˈɛst kʌmʲpjˈjutʲɛr", ["t", "ɛ", "s", "t", "k", "ʌ", "m", "p", "j", "j", "u", "t", "ɛ", "r"]),
    ("ɡˈɛɲɕlɔ̃", ["ɡ", "ɛ", "ɲ", "ɕ", "l", "ɔ"]),  # nasalisation
    ("t͡sa tsa", ["t͡s", "a", "t", "s", "a"]),  # a tie bar joins, no tie bar splits
    ("ˈaː.ˌbʰa‿i", ["a", "b", "a", "i"]),  # syllable and linking marks, aspiration
    ("ɪç gᵻ", ["ɪ", "ç", "ɡ", "ɨ"]),  # ç keeps its cedilla; espeak-ng's g and ᵻ spelled as IPA
    ("ʦa ʧ", ["t͡s", "a", "t͡ʃ"]),  # ligatures
])
def test_ipa_segments_fold_into_universal_phones(ipa, phones):
    assert ipa_segments(ipa) == phones
    assert all(unicodedata.is_normalized("NFC", p) for p in ipa_segments(ipa))


def test_ipa_segments_count_what_they_leave_out():
    unknown = Counter()
    assert ipa_segments("a?b 1", unknown) == ["a", "b"]
    assert unknown == Counter({"?": 1, "1": 1})


def test_articulatory_features_are_panphons():
    names, rows = articulatory_features(["a", "p", "t͡s"])
    assert names[:3] == ["syl", "son", "cons"]
    a, p, ts = (dict(zip(names, row)) for row in rows)
    assert (a["syl"], p["syl"], p["voi"], p["lab"], ts["delrel"], ts["strid"]) == (1, -1, -1, 1, 1, 1)
    with pytest.raises(ValueError):
        articulatory_features(["?"])


@pytest.mark.parametrize("sentence, language, expected", [
    ("Dnes je hezky, a svítí slunce!", "cs", "dnes je hezky a svítí slunce"),
    ("L'uomo è qui, dell'anno scorso.", "it", "l'uomo è qui dell'anno scorso"),
    ("Это тест, «ёлки» — палки.", "ru", "это тест ёлки палки"),
    ("L'option affiche la liste des fichiers.", "fr", "l'option affiche la liste des fichiers"),
    ("Dit programma toont de inhoud van een map.", "nl", "dit programma toont de inhoud van een map"),
    ("Mostra o conteúdo do diretório atual.", "pt", "mostra o conteúdo do diretório atual"),
    ("Visa innehållet i den aktuella katalogen.", "sv", "visa innehållet i den aktuella katalogen"),
    ("No s'ha pogut obrir el fitxer «dades».", "ca", "no s'ha pogut obrir el fitxer dades"),
    ("यह फ़ाइल खोली नहीं जा सकी।", "hi", "यह फ़ाइल खोली नहीं जा सकी"),  # the danda is punctuation
    ("फ़ाइल %s खोली नहीं जा सकी", "hi", None),  # a format placeholder
    ("ఈ ఫైలును తెరవడం సాధ్యం కాదు.", "te", "ఈ ఫైలును తెరవడం సాధ్యం కాదు"),
    ("ఫైలు GTK తెరవడం సాధ్యం కాదు", "te", None),  # Latin letters
    ("Print the name of the current directory.", "nl", None),  # English passes Dutch's letters, not its words
    ("whoami - print effective user name.", "fi", None),  # untranslated English
    ("Käytä valitsinta --verbose nähdäksesi lisää.", "fi", None),  # an option
    ("Soubor /etc/passwd je důležitý.", "cs", None),  # a path
    ("GNU je svobodný systém.", "cs", None),  # an acronym
    ("Mám 3 jablka a hrušku.", "cs", None),  # a digit
    ("Ano.", "cs", None),  # too short
])
def test_normalize_sentence(sentence, language, expected):
    assert normalize_sentence(sentence, language) == expected


def test_man_pages_give_running_text_without_macros(tmp_path):
    page = tmp_path / "man1" / "ls.1.gz"
    page.parent.mkdir()
    with gzip.open(page, "wt", encoding="utf-8") as f:
        f.write('.\\" comment\n.TH LS 1\n.SH JMÉNO\nls \\- vypíše obsah adresáře\n.SH POPIS\n'
                "Vypíše informace o \\fBsouborech\\fP v adresáři.\nTřídí je podle\\(emabecedy.\n"
                ".TP\n.B \\-a\nnevynechá položky začínající \\fI.\\fR\n")
    assert list(multilingual.man_page_paragraphs(tmp_path)) == [
        "ls - vypíše obsah adresáře",
        "Vypíše informace o souborech v adresáři. Třídí je podle abecedy.",
        "nevynechá položky začínající .",
    ]


def test_sentences_split_at_a_danda_in_a_script_without_capitals():
    assert multilingual.split_into_sentences("फ़ाइल नहीं मिली। दोबारा कोशिश करें। ok. nope") == [
        "फ़ाइल नहीं मिली।", "दोबारा कोशिश करें। ok. nope"]


def test_message_catalogs_give_the_translations_only_and_only_as_a_last_resort(tmp_path, monkeypatch):
    """A language without fortunes or man pages reads the translated messages of the catalogs
    in MESSAGE_CATALOGS, never their English originals (msgids)."""
    import polib

    catalog = polib.POFile()
    catalog.metadata = {"Content-Type": "text/plain; charset=UTF-8", "Plural-Forms": "nplurals=2; plural=(n!=1);"}
    catalog.append(polib.POEntry(msgid="Could not open the file", msgstr="फ़ाइल खोली नहीं जा सकी"))
    catalog.append(polib.POEntry(msgid="%d file", msgid_plural="%d files",
                                 msgstr_plural={0: "एक फ़ाइल", 1: "कई फ़ाइलें"}))
    domain, package = multilingual.MESSAGE_CATALOGS[0]
    path = tmp_path / "locale" / "hi" / "LC_MESSAGES" / f"{domain}.mo"
    path.parent.mkdir(parents=True)
    catalog.save_as_mofile(str(path))
    for name, directory in (("LOCALE_DIR", "locale"), ("FORTUNES_DIR", "fortunes"), ("MAN_DIR", "man")):
        monkeypatch.setattr(multilingual, name, tmp_path / directory)
    (source,) = multilingual.language_text_sources("hi")
    assert (source.name, source.path) == (f"{package}:{domain}.mo", path)
    assert sorted(source.read(source.path)) == sorted(["फ़ाइल खोली नहीं जा सकी", "एक फ़ाइल", "कई फ़ाइलें"])
    (tmp_path / "man" / "hi").mkdir(parents=True)  # man pages in the language: the catalogs are not read
    assert [s.name for s in multilingual.language_text_sources("hi")] == ["manpages-hi"]


def test_corpus_satisfies_the_interface(corpus):
    report = json.loads((corpus / "report.json").read_text())
    assert report["english"] is False and report["languages"] == ["cs", "fi"]
    phones = SymbolTable.from_file(corpus / "lang" / "phones.txt")
    assert phones[0] == "<blk>" and len(phones) == report["phones"] + 1
    voices = {}
    for split in ("train", "heldout"):
        audio = load_audio(corpus, split)
        assert audio.ids and all(f.shape[1] == 80 for f in audio.feats)
        sups = [c.supervisions[0] for c in load_manifest(corpus / "manifests" / f"cuts_{split}.jsonl.gz")]
        assert {s.language for s in sups} == {"cs", "fi"}
        for sup in sups:
            assert sup.text.split() and all(p in phones for p in sup.text.split())
            assert sup.custom["engine"] == "espeak-ng" and sup.custom["orthography"]
            assert sup.speaker == audio.speakers[audio.ids.index(sup.id)]
        voices[split] = {s.speaker for s in sups}, {s.custom["voice"] for s in sups}
        assert report["audio"][split]["cs"]["utterances"] == sum(s.language == "cs" for s in sups)
    assert not voices["train"][0] & voices["heldout"][0]
    assert not voices["train"][1] & voices["heldout"][1]
    rows = (corpus / "lang" / "articulatory.tsv").read_text(encoding="utf-8").splitlines()
    names, values = articulatory_features(phones.symbols[1:])
    assert rows[0].split("\t") == ["phone", *names]
    assert [r.split("\t")[0] for r in rows[1:]] == phones.symbols[1:]
    assert [list(map(int, r.split("\t")[1:])) for r in rows[1:]] == values


def test_rerun_is_a_no_op(corpus, caplog):
    before = {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file() and p.name != ".lock"}
    with caplog.at_level("INFO", logger="usrasr"):
        build(corpus)
    assert "up to date" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_an_interrupted_synthesis_resumes(tmp_path, corpus):
    out = tmp_path / "corpus"
    build(out)
    wavs = sorted((out / "audio" / "train").glob("*.wav"))
    kept = wavs[0].stat().st_mtime_ns
    wavs[-1].unlink()  # as if the run was killed before this utterance
    steps = out / "steps" / "multilingual_audio.json"
    record = json.loads(steps.read_text())
    steps.write_text(json.dumps({**record, "complete": False}))
    build(out)
    assert wavs[-1].exists() and wavs[0].stat().st_mtime_ns == kept
    assert _contents(out) == _contents(corpus)


def _contents(corpus: Path) -> dict:
    """What a build wrote, without the paths of its directory: supervisions, the utterance
    plan, phones.txt and articulatory.tsv, and the audio, byte for byte."""
    out = {}
    for split in ("train", "heldout"):
        sups = load_manifest(corpus / "manifests" / f"supervisions_{split}.jsonl.gz")
        out[f"supervisions_{split}"] = [s.to_dict() for s in sups]
        out[f"audio_{split}"] = {p.name: p.read_bytes() for p in sorted((corpus / "audio" / split).glob("*.wav"))}
    with gzip.open(corpus / "text" / "multilingual_utterances.json.gz", "rt", encoding="utf-8") as f:
        out["utterances"] = json.load(f)
    for name in ("phones.txt", "articulatory.tsv"):
        out[name] = (corpus / "lang" / name).read_bytes()
    return out


@pytest.mark.parametrize("languages, texts, message", [
    (["xx"], TEXTS, "unknown language 'xx'"),
    (["en"], TEXTS, "English"),
    (["cs", "cs"], TEXTS, "named twice"),
    (["cs", "pl"], TEXTS, "no text installed for 'pl'"),
    (["cs"], {"cs": ["Dnes ráno svítilo slunce nad řekou."]}, "fewer than"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, languages, texts, message):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(multilingual, "language_text_sources", paragraph_sources(texts))
        with pytest.raises(UsrasrError, match=message) as error:
            prepare_multilingual(tmp_path / "c", languages, **TINY)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "c" / "audio").exists()


def test_bad_input_exits_nonzero_from_the_command(tmp_path):
    result = CliRunner().invoke(cli, ["prepare", "multilingual", "--languages", "cs,xx", "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and "unknown language 'xx'" in result.output
    result = CliRunner().invoke(cli, ["prepare", "multilingual", "--languages", "cs", "--engines", "flite",
                                      "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and "unknown TTS engine" in result.output


def test_no_english_voice_for_any_language():
    for language in multilingual.ALPHABETS:
        for by_engine in multilingual.voice_plan(language).values():
            for engine, voices in by_engine.items():
                for voice in voices:
                    assert voice.name not in ENGINES[engine].base_voices()  # the English voices
                    assert not voice.name.lower().startswith("en")
                    if engine == "festival":
                        assert ENGINES["festival"].LANGUAGE_VOICES[voice.name][0] == language


def _poison(*_args, **_kwargs):
    raise AssertionError("the multilingual corpus read an English source")


def test_builder_reads_no_english_text_and_output_is_unchanged_when_it_is_poisoned(tmp_path, corpus):
    """Poison every English source the default corpus reads (its text sources, CMUdict, the
    English fortunes directory) and watch every file opened: the build never touches them and
    writes the same corpus, byte for byte."""
    import usrasr.lang.g2p
    import usrasr.prepare.sources as sources

    opened: list[str] = []
    watching = [True]

    def audit(event, args):
        if watching[0] and event == "open" and isinstance(args[0], (str, Path)):
            opened.append(str(args[0]))

    sys.addaudithook(audit)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in list(sources.SOURCES):
                patch.setitem(sources.SOURCES, name, _poison)
            for name in ("fortunes", "world_english_bible", "state_of_the_union", "sotu_tarball"):
                patch.setattr(sources, name, _poison)
            patch.setattr(usrasr.lang.g2p, "cmudict_lexicon", _poison)
            build(tmp_path / "poisoned")
    finally:
        watching[0] = False
    assert _contents(tmp_path / "poisoned") == _contents(corpus)
    assert any("multilingual_sentences" in p for p in opened)  # the watch works
    english = [p for p in opened if Path(p).parent == FORTUNES_DIR or "cmudict" in p.lower()
               or "sotu" in p.lower() or "/data/default/" in p]
    assert not english, english


@pytest.mark.skipif(not (FORTUNES_DIR / "it").is_dir(), reason="fortunes-it is not installed")
def test_italian_fortunes_come_from_their_own_directory():
    """fortunes-it links its collections into the English directory too: they are read from
    fortunes/it alone, and the English source skips the links."""
    from usrasr.prepare.sources import fortune_paragraphs

    (source,) = [s for s in multilingual.language_text_sources("it") if s.name == "fortunes-it"]
    assert source.path == FORTUNES_DIR / "it"
    linked = {p.name for p in FORTUNES_DIR.iterdir() if p.is_symlink() and not p.suffix}
    assert linked, "fortunes-it no longer links into the English directory"
    italian = set(fortune_paragraphs(FORTUNES_DIR / "it"))
    # A handful of fortunes (computer jokes) are in both languages' collections.
    assert len(italian & set(fortune_paragraphs(FORTUNES_DIR))) < 0.01 * len(italian)
