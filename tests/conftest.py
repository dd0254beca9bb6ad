import os

os.environ.setdefault("USRASR_NO_PROGRESS", "1")
