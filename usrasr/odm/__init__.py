"""Output-distribution matching (ODM): classifiers of continuous features trained so that
the expected phone n-gram distribution of their outputs matches the phone LM's."""
