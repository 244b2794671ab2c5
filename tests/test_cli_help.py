"""Every option of every command says what it does and its default; `objectives` fits 100 columns."""
from __future__ import annotations

import click
from click.testing import CliRunner

from bench.cli import main


def _options(command, path=()):
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _options(sub, (*path, name))
        return
    for param in command.params:
        if isinstance(param, click.Option):
            yield " ".join(path), param


def test_every_option_has_help_and_its_default():
    """Mutation seen failing: the help text of `report --format` removed."""
    missing = []
    for path, option in _options(main):
        text = option.help or ""
        has_default = not (option.is_flag or option.multiple or option.required or option.default is None)
        if not text or (has_default and not option.show_default and "default" not in text.lower()):
            missing.append(f"{path} {option.opts[-1]}")
    assert not missing, missing


def test_objectives_fit_100_columns_and_read_as_yaml():
    shown = CliRunner().invoke(main, ["objectives"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "length_normalize: true" in shown.output and "True" not in shown.output   # YAML, not Python
    assert "granularity: static" in shown.output and "'static'" not in shown.output
    assert "nll (reference-free)" in shown.output and "no hyperparameters" in shown.output
    assert "adpo[beta=0.1,granularity=adaptive,m=4]" in shown.output and "terms:" in shown.output
