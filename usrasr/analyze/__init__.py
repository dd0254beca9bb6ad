"""``usrasr analyze``: how representations differ (similarity), what they carry (probe),
and which of their measures predict recognition (correlate)."""
