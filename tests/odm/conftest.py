import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run many tiny steps, which extra threads only slow down on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
