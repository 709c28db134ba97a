"""The package's public names: complete, resolvable, and loaded only when used."""

import os
import subprocess
import sys

import pytest

import hrmedseg
import hrmedseg.data


@pytest.mark.parametrize("package", [hrmedseg, hrmedseg.data], ids=lambda p: p.__name__)
def test_every_public_name_is_listed_and_resolves(package):
    assert package.__all__ == sorted(package._EXPORTS)
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        package.nothing  # noqa: B018


def test_importing_the_package_and_its_image_io_loads_no_torch():
    script = (
        "import sys, hrmedseg, hrmedseg.data.io, hrmedseg.errors, hrmedseg.cli\n"
        "assert 'torch' not in sys.modules\n"
        "hrmedseg.create_model\n"
        "assert 'torch' in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)


def test_public_functions_and_classes_document_their_arguments():
    """segment-anything's convention: an ``Args:`` block wherever a caller passes two or more."""
    import inspect

    from torch import nn

    missing = []
    for name in hrmedseg.__all__:
        obj = getattr(hrmedseg, name)
        if inspect.isclass(obj) and (issubclass(obj, (Exception, nn.Module)) or name == "ModelConfig"):
            continue  # errors; models and their config document their fields and shapes in prose
        function = obj.__init__ if inspect.isclass(obj) else obj
        params = [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]
        if len(params) >= 2 and "Args:" not in (inspect.getdoc(obj) or ""):
            missing.append(name)
    assert not missing, f"no Args: block: {missing}"
