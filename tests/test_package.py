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


POSITIONAL_BY_CONVENTION = {
    "hrmedseg.inference.sam_predictor.Predictor.predict",  # SAM's, so SamPredictor code runs as is
    "hrmedseg.modeling.linear_attention.linear_attention",  # q, k, v, rotations: as kernels take them
}


def test_public_functions_take_at_most_three_positional_parameters():
    """Past three, arguments are named at the call: one shared order, no silent swaps."""
    import importlib
    import inspect
    import pkgutil

    from torch import nn

    offenders = []
    for info in pkgutil.walk_packages(hrmedseg.__path__, "hrmedseg."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != info.name:
                continue
            if inspect.isfunction(obj):
                functions = [(name, obj)]
            elif inspect.isclass(obj) and not hasattr(obj, "__dataclass_fields__"):
                if issubclass(obj, nn.Module) and info.name.startswith("hrmedseg.modeling"):
                    continue  # network building blocks, built by the registry from a config
                own_init = [(name, obj.__init__)] if "__init__" in vars(obj) else []
                functions = own_init + [
                    (f"{name}.{m}", f) for m, f in vars(obj).items()
                    if inspect.isfunction(f) and not m.startswith("_") and m != "forward"
                ]  # fmt: skip
            else:
                continue
            for qualname, function in functions:
                kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                positional = [
                    p for p in inspect.signature(function).parameters.values()
                    if p.kind in kinds and p.name not in ("self", "cls")
                ]  # fmt: skip
                full = f"{info.name}.{qualname}"
                if len(positional) > 3 and full not in POSITIONAL_BY_CONVENTION:
                    offenders.append(f"{full}({', '.join(p.name for p in positional)})")
    assert not offenders, "more than three positional parameters:\n" + "\n".join(offenders)
