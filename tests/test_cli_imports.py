"""The ``califlow`` command must not silently lose a sub-command whose module fails to import."""

from __future__ import annotations

import pytest


def test_a_sub_command_module_that_fails_to_import_raises(monkeypatch):
    from califlow import cli

    monkeypatch.setattr(cli, "_COMMANDS", [*cli._COMMANDS, ("califlow.no_such_module", "add_cli")])
    with pytest.raises(ImportError, match="califlow.no_such_module"):
        cli.build_parser()


def test_every_sub_command_registers():
    from califlow import cli

    choices = cli.build_parser()._subparsers._group_actions[0].choices
    assert {"config", "init", "run"} <= set(choices)
