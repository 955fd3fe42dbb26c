import pytest
import torch


@pytest.fixture(scope="module")
def single_torch_thread():
    # Tiny tensors: on a shared 2-core machine, a second thread costs far more in waiting than it gives.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
