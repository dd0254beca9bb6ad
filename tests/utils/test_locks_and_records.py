"""Directory locks that a killed process releases, and input records that a resume must match."""

import subprocess
import sys

import pytest

from usrasr.utils.config import record_inputs
from usrasr.utils.errors import UsrasrError
from usrasr.utils.processes import lock_directory, unlock_directory


def test_a_locked_directory_is_refused_until_its_holder_exits(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", f"""
from usrasr.utils.processes import lock_directory
import sys, time
lock_directory({str(tmp_path)!r}, "run")
print("locked", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsrasrError, match="in use by another usrasr process"):
            lock_directory(tmp_path, "run")
    finally:
        holder.kill()
        holder.wait()
    lock_directory(tmp_path, "run")  # released by the kernel when the holder died
    unlock_directory(tmp_path)


def test_resume_must_match_the_recorded_inputs(tmp_path):
    record = tmp_path / "corpus.yaml"
    record_inputs(record, {"path": "/a", "cuts": "1"}, resume=False, what="corpus")
    record_inputs(record, {"path": "/a", "cuts": "1"}, resume=True, what="corpus")
    with pytest.raises(UsrasrError, match=r"different corpus \(cuts, path changed"):
        record_inputs(record, {"path": "/b", "cuts": "2"}, resume=True, what="corpus")


def test_forked_map_keeps_the_order_and_reads_the_parents_memory():
    import os

    from usrasr.utils.processes import forked_map

    table = {i: i * i for i in range(7)}  # inherited by the workers, never pickled
    assert forked_map(lambda i: (os.getpid(), table[i]), list(range(7)), 1) == [(os.getpid(), i * i) for i in range(7)]
    results = forked_map(lambda i: (os.getpid(), table[i]), list(range(7)), 3)
    assert [r[1] for r in results] == [i * i for i in range(7)]
    assert os.getpid() not in {r[0] for r in results}
