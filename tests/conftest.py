import pytest
import torch
from helpers import zero_init_unfrozen


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def unfreeze_zero_init():
    """MBConv's last BatchNorm starts at weight 0, which blocks gradients into that block at
    initialisation by design; give it weight 1 where a test needs gradients everywhere."""
    return zero_init_unfrozen
