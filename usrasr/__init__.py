"""usrasr: unsupervised speech recognition from unpaired audio and text.

One package per stage, layered: a package imports only from the layers below
it (``pyproject.toml`` states this as import-linter contracts, checked by the
test suite)::

    cli                       the root command group and the one lazy group
      bench                   benchmarks (one registry, one module each)
        train                 orchestration: units/, seqce_stage, word_em, self_training,
                              diagnostics (the only reader of corpus.scoring, with pipeline)
          simulate | align    synthetic worlds that test the method; cross-modal word alignment
            prepare | pretrain | decode | evaluate | extract    the other commands' libraries
              seqce | odm     the unsupervised objectives over the phone LM
                models        acoustic models, the self-supervised encoder, users' pretrained encoders, CTC training
                  graph       FSAs, differentiable marginals, topologies, HLG compilation
                    corpus    layout, features, reader (blind audio), speakers, scoring
                      lang    phones, symbols, lexicon, LMs, text normalisation, G2P
                        utils io, console, config, device, distributed, metrics, errors

Transcripts and alignments are read through :mod:`usrasr.corpus.scoring`
alone, and only :mod:`usrasr.train.diagnostics`, :mod:`usrasr.train.pipeline`
and the diagnostic oracle of alignment, :mod:`usrasr.align.oracle`, may import
it: the unsupervised path cannot see them.
"""

__version__ = "0.1.0"
