"""--compile: torch.compile gives the eager model's numbers and keeps checkpoints unchanged."""

import numpy as np
import pytest
import torch
from helpers import SHALLOW

import hrmedseg
from hrmedseg.runtime import compile_model

pytestmark = pytest.mark.slow  # the first call compiles: about a minute on 2 CPU cores


def test_a_compiled_model_matches_eager_on_the_cpu_and_saves_the_same_weights(tmp_path):
    torch.manual_seed(0)
    model = hrmedseg.create_model("hrmedseg_t", img_size=64, **SHALLOW).eval()  # compiles in less time
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eager = model(images)
    eager_keys = list(model.state_dict())
    compile_model(model, "default")
    with torch.no_grad():
        compiled = model(images)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    assert list(model.state_dict()) == eager_keys  # in place: no _orig_mod prefix in checkpoints
    loaded = hrmedseg.load_model(hrmedseg.save_model(model, tmp_path / "m.safetensors"))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(images).numpy(), eager.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="compile must be one of"):
        compile_model(model, "fastest")
