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
