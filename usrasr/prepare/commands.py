"""``usrasr prepare``: one Click command per corpus recipe (Lhotse style); ``usrasr check``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from usrasr.utils.console import log, stderr

_num_workers = click.option("-j", "--num-workers", type=int, default=2, show_default=True,
                            help="Parallel worker processes.")
_force = click.option("--force", is_flag=True,
                      help="Redo every step (without it, only steps whose inputs or options changed).")
_lm_orders = [
    click.option("--phone-lm-order", type=click.IntRange(1, 5), default=2, show_default=True,
                 help="Order of the phone n-gram LM of the training graphs."),
    click.option("--word-lm-order", type=click.IntRange(1, 5), default=3, show_default=True,
                 help="Order of the word n-gram LM (decoding graph)."),
    click.option("--decoding-phone-lm-order", type=click.IntRange(1, 5), default=5, show_default=True,
                 help="Order of the phone n-gram LM of phone decoding (HP graph, PER)."),
]


def _with_lm_orders(f):
    for option in reversed(_lm_orders):
        f = option(f)
    return f


@click.group()
def prepare() -> None:
    """Build corpora: manifests, lang dir, LMs, features."""


@prepare.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Corpus directory to create.")
@click.option("--utterances", type=int, default=None,
              help="Train-audio utterances (default 1500; dev 100, test 200).")
@click.option("--hours", type=float, default=None, help="Train-audio size in hours instead of --utterances.")
@click.option("--dev-utterances", type=int, default=None)
@click.option("--test-utterances", type=int, default=None)
@click.option("--text-sentences", type=int, default=None, help="Cap on train-text sentences (default 40000).")
@click.option("--sources", default="fortunes,bible,sotu", show_default=True,
              help="Comma-separated text sources.")
@_with_lm_orders
@_num_workers
@_force
def default(out_dir, utterances, hours, dev_utterances, test_utterances, text_sentences, sources,
            phone_lm_order, word_lm_order, decoding_phone_lm_order, num_workers, force) -> None:
    """The default unpaired corpus, synthesised from registry-installed text and voices."""
    from usrasr.prepare.default_corpus import DEFAULT_TEXT_SENTENCES, DEFAULT_UTTERANCES, prepare_default
    from usrasr.prepare.text import LmOrders

    if utterances is not None and hours is not None:
        raise click.UsageError("give --utterances or --hours, not both")
    sizes = dict(DEFAULT_UTTERANCES)
    for split, value in (("train_audio", utterances), ("dev", dev_utterances), ("test", test_utterances)):
        if value is not None:
            sizes[split] = value
    report = prepare_default(
        out_dir, utterances=sizes, hours=hours, sources=sources.split(","),
        text_sentences=text_sentences or DEFAULT_TEXT_SENTENCES,
        orders=LmOrders(phone_lm_order, word_lm_order, decoding_phone_lm_order), num_workers=num_workers, force=force)
    table = Table(title=f"corpus {out_dir}")
    for column in ("split", "sentences", "utterances", "hours", "voices", "aligned"):
        table.add_column(column)
    for split, n in report["sentences"].items():
        audio = report["audio"].get(split, {})
        table.add_row(split, str(n), str(audio.get("utterances", "-")), str(audio.get("hours", "-")),
                      str(len(audio.get("voices", []))) if audio else "-",
                      str(audio.get("with_alignment", "-")))
    stderr.print(table)
    log.info("wall time per step (s): %s", report["seconds"])


@prepare.command()
@click.option("--languages", required=True,
              help="Comma-separated ISO 639-1 codes, none English, e.g. cs,fi,it,ru (known: cs, de, es, fi, it, "
                   "pl, ru).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Corpus directory to create.")
@click.option("--hours", type=float, default=5.0, show_default=True,
              help="Audio in all, split evenly between the languages.")
@click.option("--heldout-fraction", type=float, default=0.1, show_default=True,
              help="Share of each language's audio spoken by the held-out voices.")
@click.option("--engines", default="espeak-ng,festival", show_default=True,
              help="Comma-separated TTS engines whose voices speak.")
@_num_workers
@_force
def multilingual(languages, out_dir, hours, heldout_fraction, engines, num_workers, force) -> None:
    """Transcribed speech in other languages than English, labelled with universal IPA phones.

    Text from Debian's fortunes-<lang> and manpages-<lang>, voices from espeak-ng and festival;
    splits train and heldout (voices never in train).  See docs/multilingual.md.
    """
    from usrasr.prepare.multilingual import SPLITS, prepare_multilingual

    report = prepare_multilingual(out_dir, [lang.strip() for lang in languages.split(",") if lang.strip()],
                                  hours=hours, heldout_fraction=heldout_fraction,
                                  engines=tuple(e.strip() for e in engines.split(",") if e.strip()),
                                  num_workers=num_workers, force=force)
    table = Table(title=f"multilingual corpus {out_dir} ({report['phones']} phones)")
    for column in ("language", "split", "utterances", "hours", "hours per engine", "voices"):
        table.add_column(column)
    for lang in report["languages"]:
        for split in SPLITS:
            entry = report["audio"][split].get(lang, {})
            engines = ", ".join(f"{e} {v['hours']:.2f}" for e, v in sorted(entry.get("engines", {}).items()))
            table.add_row(lang, split, str(entry.get("utterances", 0)), f"{entry.get('hours', 0):.2f}", engines,
                          str(len(entry.get("voices", {}))))
    stderr.print(table)
    log.info("%.2f h in all; wall time per step (s): %s", report["hours"], report["seconds"])


@prepare.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--name", default="train_audio", show_default=True, help="Split name of the manifests.")
@_num_workers
@_force
def audio(source, out_dir, name, num_workers, force) -> None:
    """Unpaired audio: a folder of audio files, a Kaldi wav.scp, or a Lhotse manifest.

    The id of a file is its path below the folder without extension ('/' and spaces become
    '_'); the audio goes to OUT/audio/NAME/, one folder per split.
    """
    from usrasr.prepare.audio import prepare_audio

    prepare_audio(source, out_dir, name, num_workers, force)


@prepare.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--lexicon", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Your own lexicon, UTF-8: 'WORD PH1 PH2 ...' (Kaldi lexicon) or 'WORD PROB PH1 ...' "
                   "(lexiconp: probabilities are dropped), in the 39 ARPAbet phones of "
                   "data/lang/phones.txt; any case; stress digits (AH0) are stripped.  Default CMUdict.")
@click.option("--no-g2p", is_flag=True, help="Map words missing from the lexicon to <UNK> instead of G2P.")
@_with_lm_orders
@_force
def text(source, out_dir, lexicon, no_g2p, phone_lm_order, word_lm_order, decoding_phone_lm_order, force) -> None:
    """Unpaired text: a plain-text corpus, one sentence per line -> lang dir and LMs."""
    from usrasr.prepare.text import LmOrders, prepare_text

    prepare_text(source, out_dir, lexicon, not no_g2p, LmOrders(phone_lm_order, word_lm_order, decoding_phone_lm_order),
                 force)


@click.command()
@click.argument("corpus", type=click.Path(exists=True, file_okay=False, path_type=Path))
def check(corpus: Path) -> None:
    """Check a prepared corpus against the method's conditions (exit 1 on failure)."""
    from usrasr.prepare.check import check_corpus, format_report

    report = check_corpus(corpus)
    click.echo(format_report(report))
    sys.exit(0 if report.ok else 1)
