"""``torch_threads``: a stage's own thread count, unless the user chose one."""

import pytest
import torch

from usrasr.utils.device import torch_threads
from usrasr.utils.errors import UsrasrError


def test_the_stage_default_holds_inside_and_the_previous_count_comes_back(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with torch_threads(other) as count:
        assert count == other == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_omp_num_threads_overrides_the_default_also_as_a_decorator(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()

    @torch_threads(1)
    def stage():
        return torch.get_num_threads()

    assert stage() == 2
    assert torch.get_num_threads() == before


def test_a_bad_omp_num_threads_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(UsrasrError, match="OMP_NUM_THREADS"), torch_threads(1):
        pass


def test_precision_auto_means_bf16_only_where_the_device_has_bf16_units(monkeypatch):
    from usrasr.utils.device import uses_bf16

    cpu = torch.device("cpu")
    assert uses_bf16("bf16", cpu) and not uses_bf16("fp32", cpu)
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
        assert uses_bf16("auto", cpu) == native
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert not uses_bf16("auto", cpu)  # a torch without the probes: float32
    with pytest.raises(UsrasrError, match="precision must be one of"):
        uses_bf16("fp16", cpu)
