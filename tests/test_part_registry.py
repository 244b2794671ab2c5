"""The one mechanism behind the backend, scorer and data-source registries (trainers.registry)."""
from __future__ import annotations

import pytest

from trainers.registry import Registry


def test_a_name_registered_twice_is_refused():
    parts: Registry[int] = Registry("widget", "tests.parts")
    parts.add("a", 1)
    with pytest.raises(RuntimeError, match="widget 'a' is registered twice"):
        parts.add("a", 2)
    assert parts.parts == {"a": 1}


def test_discovery_imports_every_module_of_the_package_on_the_first_lookup(tmp_path, monkeypatch):
    # A package of two part files, each adding itself to a registry (as a backend file does).
    package = tmp_path / "widgets_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from trainers.registry import Registry\nWIDGETS = Registry('widget', __name__)\n")
    for name in ("round", "square"):
        (package / f"{name}.py").write_text(f"from widgets_pkg import WIDGETS\nWIDGETS.add({name!r}, {name!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import widgets_pkg

    try:
        assert widgets_pkg.WIDGETS.parts == {}                          # nothing until the first lookup
        assert widgets_pkg.WIDGETS.find("square") == "square"
        assert list(widgets_pkg.WIDGETS.discover()) == ["round", "square"]
    finally:
        for module in ("widgets_pkg", "widgets_pkg.round", "widgets_pkg.square"):
            monkeypatch.delitem(__import__("sys").modules, module, raising=False)


def test_did_you_mean_names_the_nearest_registered_part():
    parts: Registry[int] = Registry("widget", "trainers.objectives")   # its files are imported already
    parts.add("reward_model", 1)
    assert parts.did_you_mean("reward_modle") == " (did you mean 'reward_model'?)"
    assert parts.did_you_mean("zzz") == ""
