"""Unsupervised cross-modal alignment of spoken-word and text-word embedding spaces.

The route of Chung et al. (2018): embed word-like speech segments from the
audio alone (:mod:`usrasr.align.speech`), embed the words of the unpaired text
with word2vec (:mod:`usrasr.align.text`), and map one space onto the other
with no parallel data (:mod:`usrasr.align.mapping`): an adversarial orthogonal
map, then Procrustes refinement on a CSLS dictionary.  Segments come from a
model's decoding, from pauses and energy, or (diagnostic only) from the
scoring alignments (:mod:`usrasr.align.oracle`, the one module here that may
read transcripts).  :func:`usrasr.align.pipeline.align_corpus` runs it all.
"""
