"""Human and machine reports of :class:`ErrorStats`: Kaldi lines, breakdowns, errs file, JSON."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

from usrasr.evaluate.scoring import EPS, ErrorStats, compute_error_rate
from usrasr.utils.console import log
from usrasr.utils.errors import UsrasrError
from usrasr.utils.io import atomic_open, write_json_atomic

MAX_IDS_SHOWN = 5


def _percent(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "inf"


def compute_wer_lines(stats: ErrorStats) -> list[str]:
    """Kaldi ``compute-wer --mode=all`` output: %WER, %SER and the scored-sentences line.

    Kaldi labels every unit ``%WER``; ``[PARTIAL]`` marks references that had no hypothesis.
    """
    partial = " [PARTIAL]" if stats.missing else ""
    return [
        f"%WER {_percent(stats.error_rate)} [ {stats.errors} / {stats.ref_len}, {stats.insertions} ins, "
        f"{stats.deletions} del, {stats.substitutions} sub ]{partial}",
        f"%SER {_percent(stats.sentence_error_rate)} [ {stats.sentence_errors} / {stats.num_sentences} ]",
        f"Scored {stats.num_sentences} sentences, {len(stats.missing)} not present in hyp.",
    ]


def breakdown_lines(title: str, groups: dict[str, ErrorStats]) -> list[str]:
    """A table of error rates per speaker or voice."""
    width = max([len(title)] + [len(g) for g in groups])
    lines = [f"{title:<{width}}  {'utts':>5} {'ref':>7} {'%ERR':>7} {'ins':>5} {'del':>5} {'sub':>5}"]
    for name, s in groups.items():
        lines.append(
            f"{name:<{width}}  {s.num_sentences:>5} {s.ref_len:>7} {_percent(s.error_rate):>7} "
            f"{s.insertions:>5} {s.deletions:>5} {s.substitutions:>5}"
        )
    return lines


def frequent_error_lines(stats: ErrorStats, top: int) -> list[str]:
    """The ``top`` most frequent substitutions, deletions and insertions (empty kinds left out)."""
    subs, dels, ins = stats.frequent_errors()
    sections = (
        ("substitutions (ref -> hyp)", [f"{n:>6}  {r} -> {h}" for (r, h), n in subs.most_common(top)]),
        ("deletions", [f"{n:>6}  {r}" for r, n in dels.most_common(top)]),
        ("insertions", [f"{n:>6}  {h}" for h, n in ins.most_common(top)]),
    )
    return [line for title, rows in sections if rows for line in (f"Most frequent {title}:", *rows)]


def id_list(ids: list[str]) -> str:
    """``a, b, c, ... (+N more)`` for messages."""
    shown = ", ".join(ids[:MAX_IDS_SHOWN])
    return shown + (f", ... (+{len(ids) - MAX_IDS_SHOWN} more)" if len(ids) > MAX_IDS_SHOWN else "")


def write_errs_file(path: Path, stats: ErrorStats) -> None:
    """Per-utterance alignments and error tables in icefall's ``errs-*.txt`` layout."""
    subs, dels, ins = stats.frequent_errors()
    correct = stats.ref_len - stats.deletions - stats.substitutions
    with atomic_open(path) as f:
        f.write(f"%WER = {_percent(stats.error_rate)}\n")
        f.write(
            f"Errors: {stats.insertions} insertions, {stats.deletions} deletions, {stats.substitutions} "
            f"substitutions, over {stats.ref_len} reference {stats.unit}s ({correct} correct)\n"
        )
        f.write("Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, "
                "INSERTIONS:, PER-WORD STATS:\n\n")
        f.write("PER-UTT DETAILS: corr or (ref->hyp)\n")
        for u in stats.utterances:
            tokens = [r if r == h else f"({r}->{h})" for r, h in u.alignment]
            note = "  [no hypothesis]" if u.hyp_missing else ""
            f.write(f"{u.id}:\t{' '.join(tokens)}{note}\n")
        f.write("\nSUBSTITUTIONS: count ref -> hyp\n")
        f.writelines(f"{n}   {r} -> {h}\n" for (r, h), n in subs.most_common())
        f.write("\nDELETIONS: count ref\n")
        f.writelines(f"{n}   {r}\n" for r, n in dels.most_common())
        f.write("\nINSERTIONS: count hyp\n")
        f.writelines(f"{n}   {h}\n" for h, n in ins.most_common())
        f.write("\nPER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp\n")
        corr, errs, in_ref, in_hyp = Counter(), Counter(), Counter(), Counter()
        for u in stats.utterances:
            for r, h in u.alignment:
                in_ref[r] += r != EPS
                in_hyp[h] += h != EPS
                if r == h:
                    corr[r] += 1
                else:
                    errs[r] += r != EPS
                    errs[h] += h != EPS
        words = sorted((w for w in in_ref.keys() | in_hyp.keys() if w != EPS), key=lambda w: (-errs[w], w))
        f.writelines(f"{w}   {corr[w]} {errs[w]} {in_ref[w]} {in_hyp[w]}\n" for w in words)


def _stats_dict(stats: ErrorStats) -> dict:
    rate = stats.error_rate
    ser = stats.sentence_error_rate
    return {
        "error_rate": rate if math.isfinite(rate) else None,
        "errors": stats.errors,
        "insertions": stats.insertions,
        "deletions": stats.deletions,
        "substitutions": stats.substitutions,
        "ref_len": stats.ref_len,
        "sentences": stats.num_sentences,
        "sentence_errors": stats.sentence_errors,
        "sentence_error_rate": ser if math.isfinite(ser) else None,
    }


def summary(stats: ErrorStats, breakdowns: dict[str, dict[str, ErrorStats]], top: int) -> dict:
    """The JSON summary: totals, missing/extra ids, breakdowns and frequent errors."""
    subs, dels, ins = stats.frequent_errors()
    return {
        "unit": stats.unit,
        **_stats_dict(stats),
        "missing_hypotheses": {"count": len(stats.missing), "ids": stats.missing},
        "extra_hypotheses": {"count": len(stats.extra), "ids": stats.extra},
        **{f"per_{kind}": {g: _stats_dict(s) for g, s in groups.items()} for kind, groups in breakdowns.items()},
        "frequent_errors": {
            "substitutions": [[r, h, n] for (r, h), n in subs.most_common(top)],
            "deletions": [[r, n] for r, n in dels.most_common(top)],
            "insertions": [[h, n] for h, n in ins.most_common(top)],
        },
    }


def write_outputs(out_dir: Path, name: str, stats: ErrorStats, breakdowns: dict[str, dict[str, ErrorStats]], top: int) -> list[Path]:
    """``errs-<name>.txt`` and ``wer-<name>.json`` in ``out_dir``, atomically."""
    errs = out_dir / f"errs-{name}.txt"
    summary_path = out_dir / f"wer-{name}.json"
    write_errs_file(errs, stats)
    write_json_atomic(summary_path, summary(stats, breakdowns, top))
    return [errs, summary_path]


def _default_name(hyp: str) -> str:
    if hyp == "-":
        return "stdin"
    return re.sub(r"(\.(txt|jsonl|json|gz))+$", "", Path(hyp).name) or "hyp"


def evaluate_transcripts(ref: str, hyp: str, unit: str = "word", utt2spk: Path | None = None,
                         out_dir: Path | None = None, name: str | None = None, top: int = 10) -> list[str]:
    """``usrasr evaluate``: score ``hyp`` against ``ref`` (paths, or "-" for stdin); returns the
    report lines (Kaldi %WER lines, breakdowns, frequent errors) and writes the errs/JSON files
    to ``out_dir`` when given."""
    from usrasr.evaluate.transcripts import read_transcripts, read_utt2spk

    if ref == "-" and hyp == "-":
        raise UsrasrError("REF and HYP cannot both be stdin")
    refs = read_transcripts(ref)
    hyps = read_transcripts(hyp)
    if not refs.texts:
        raise UsrasrError(f"no references in {ref}")
    stats = compute_error_rate(refs.for_unit(unit), hyps.texts, unit)
    if stats.missing:
        log.warning("%d reference(s) have no hypothesis, scored as all deletions: %s", len(stats.missing), id_list(stats.missing))
    if stats.extra:
        log.warning("%d hypothesis id(s) are not in the references, ignored: %s", len(stats.extra), id_list(stats.extra))

    speakers = {**refs.speakers, **(read_utt2spk(utt2spk) if utt2spk else {})}
    breakdowns = {kind: stats.by_group(groups) for kind, groups in (("speaker", speakers), ("voice", refs.voices)) if groups}
    lines = compute_wer_lines(stats)
    for kind, groups in breakdowns.items():
        lines += ["", *breakdown_lines(kind, groups)]
    frequent = frequent_error_lines(stats, top)
    if frequent:
        lines += ["", *frequent]
    if out_dir is not None:
        for path in write_outputs(out_dir, name or _default_name(hyp), stats, breakdowns, top):
            log.info("wrote %s", path)
    return lines
