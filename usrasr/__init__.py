"""usrasr: unsupervised speech recognition from unpaired audio and text."""

__version__ = "0.1.0"
