"""The API reference lives in docstrings: every public name has one.

Public means: every module of the package whose name does not start with ``_``, and in each the
names of its ``__all__``; for a public class, also its public methods and properties. Constants
(numbers, tuples, dicts) are documented in their module's docstring or a comment and are not
checked here. The check catches a new public function or method added without documentation.
"""

import importlib
import inspect
import pkgutil

import psijax


def _public_modules():
    names = [
        m.name
        for m in pkgutil.walk_packages(psijax.__path__, "psijax.")
        if not any(part.startswith("_") for part in m.name.split("."))
    ]
    return [psijax] + [importlib.import_module(name) for name in names]


def _undocumented_members(cls, qualname: str) -> list[str]:
    missing = []
    for attr, member in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(member, property):
            member = member.fget
        elif isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        elif not inspect.isfunction(member):
            continue
        if not inspect.getdoc(member):
            missing.append(f"{qualname}.{attr}")
    return missing


def test_every_public_name_has_a_docstring():
    modules = _public_modules()
    assert len(modules) > 40  # the walk found the package
    missing = [m.__name__ for m in modules if not inspect.getdoc(m)]
    for module in modules:
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if not (callable(obj) or inspect.ismodule(obj)):
                continue  # constants
            qualname = f"{module.__name__}.{name}"
            if not inspect.getdoc(obj):
                missing.append(qualname)
            if inspect.isclass(obj):
                missing += _undocumented_members(obj, qualname)
    assert not missing, f"public names without a docstring: {sorted(set(missing))}"
