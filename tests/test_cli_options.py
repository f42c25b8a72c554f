"""Global options of ``surveil`` (--brokers, --topic-prefix, --data-dir, -v) before and after
the subcommand.

Each command's body is cut short where it hands its :class:`Settings` to the code that does the
work, or where it gets them from ``surveil.cli._settings`` (that function is replaced by a
recorder), so these tests need no broker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import surveil.cli
from streams.settings import Settings
from surveil.cli import cli

__all__: list[str] = []


class _Reached(Exception):
    """Raised by a recorder: the command got as far as handing over its settings."""


#: The settings helper every settings-using command calls (``_settings(ctx, **overrides)``).
SETTINGS_HELPER = "surveil.cli._settings"
#: command -> (arguments before the options, the function that receives the settings). The
#: worker's body is recorded at the settings helper: what it returns is what the worker runs on.
TARGETS: dict[str, tuple[list[str], str]] = {
    "worker": ([], SETTINGS_HELPER),
    "store": ([], "streams.store.run_store_writer"),
    "replay": (["tape.csv"], "surveil.commands.replay_tape"),
    "backtest": (["tape.csv", "--out", "bt"], "replay.backtest.run_backtest"),
    "up": ([], "surveil.up.run_up"),
    "exchange": ([], "surveil.live.run_exchange"),
    "feed": ([], "surveil.commands.live_feed"),
}


def recorder(monkeypatch: pytest.MonkeyPatch, command: str) -> list[Settings]:
    """Replace ``command``'s hand-over function by a recorder of the settings it is given.

    At :data:`SETTINGS_HELPER` the recorder keeps what the real helper returns. ``backtest``
    takes no settings; for it the recorder keeps the click context's settings (``ctx.obj``),
    which is what ``_settings(ctx)`` would return.
    """
    seen: list[Settings] = []
    target = TARGETS[command][1]
    settings_helper = surveil.cli._settings

    def record(*args: Any, **kwargs: Any) -> None:
        if target == SETTINGS_HELPER:
            seen.append(settings_helper(*args, **kwargs))
            raise _Reached
        given = [a for a in (*args, *kwargs.values()) if isinstance(a, Settings)]
        seen.append(given[0] if given else click.get_current_context().obj)
        raise _Reached

    monkeypatch.setattr(target, record)
    monkeypatch.setattr("streams.topics.ensure_topics", lambda *a, **k: [])
    return seen


@pytest.fixture
def root_level() -> Iterator[None]:
    """Restore the root logger's level (``-v`` changes it)."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def run(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args)


def settings_of(seen: list[Settings], result: Result) -> Settings:
    assert isinstance(result.exception, _Reached), (result.output, result.exception)
    assert len(seen) == 1
    return seen[0]


def opts(tag: str, tmp_path: Path) -> list[str]:
    return ["--brokers", f"{tag}:9092", "--topic-prefix", f"{tag}.", "--data-dir",
            str(tmp_path / tag)]


def assert_tagged(settings: Settings, tag: str, tmp_path: Path) -> None:
    assert settings.brokers == f"{tag}:9092"
    assert settings.topic_prefix == f"{tag}."
    assert settings.topics.trades == f"{tag}.trades"
    assert settings.data_dir == tmp_path / tag
    assert settings.store_dir == tmp_path / tag / "store"


@pytest.mark.parametrize("command", sorted(TARGETS))
@pytest.mark.parametrize("position", ["before", "after"])
def test_global_options_in_either_position(command: str, position: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    seen = recorder(monkeypatch, command)
    args, _target = TARGETS[command]
    given = opts("h1", tmp_path)
    argv = [*given, command, *args] if position == "before" else [command, *args, *given]
    assert_tagged(settings_of(seen, run(argv)), "h1", tmp_path)


@pytest.mark.parametrize("command", sorted(TARGETS))
def test_the_subcommand_position_wins(command: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen = recorder(monkeypatch, command)
    args, _target = TARGETS[command]
    argv = [*opts("group", tmp_path), command, *args, *opts("cmd", tmp_path)]
    assert_tagged(settings_of(seen, run(argv)), "cmd", tmp_path)


@pytest.mark.parametrize("command", ["worker", "replay", "up"])
def test_options_mix_per_option(command: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each option is resolved on its own: the subcommand overrides only what it names."""
    seen = recorder(monkeypatch, command)
    args, _target = TARGETS[command]
    argv = ["--brokers", "g:1", "--data-dir", str(tmp_path), command, *args,
            "--topic-prefix", "x."]
    settings = settings_of(seen, run(argv))
    assert (settings.brokers, settings.topic_prefix, settings.data_dir) == ("g:1", "x.", tmp_path)


@pytest.mark.parametrize("command", ["worker", "store", "replay", "backtest", "up"])
def test_environment_then_group_then_subcommand(command: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """SURVEIL_* applies when no option is given; an option in either position beats it."""
    monkeypatch.setenv("SURVEIL_BROKERS", "env:9092")
    monkeypatch.setenv("SURVEIL_TOPIC_PREFIX", "env.")
    monkeypatch.setenv("SURVEIL_DATA_DIR", str(tmp_path / "env"))
    seen = recorder(monkeypatch, command)
    args, _target = TARGETS[command]
    for argv, tag in (([command, *args], "env"),
                      ([*opts("g", tmp_path), command, *args], "g"),
                      ([command, *args, *opts("c", tmp_path)], "c")):
        seen.clear()
        assert_tagged(settings_of(seen, run(argv)), tag, tmp_path)


def test_defaults_without_options_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = recorder(monkeypatch, "store")
    assert settings_of(seen, run(["store"])) == Settings()


def test_worker_own_options_still_apply_next_to_global_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = recorder(monkeypatch, "worker")
    argv = ["worker", "--partitions", "3", "--brokers", "h:1", "--session-timeout", "6"]
    settings = settings_of(seen, run(argv))
    assert (settings.brokers, settings.partitions, settings.session_timeout_s) == ("h:1", 3, 6.0)


def test_replay_passes_its_own_options_through(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Settings, Path, dict[str, Any]]] = []
    monkeypatch.setattr("surveil.commands.replay_tape",
                        lambda settings, tape, **kw: calls.append((settings, tape, kw)))
    result = CliRunner().invoke(cli, ["replay", "TAPE", "--topic-prefix", "x.", "--speed", "10",
                                      "--batch", "7"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [(settings, tape, kw)] = calls
    assert (settings.topic_prefix, tape) == ("x.", Path("TAPE"))
    assert kw == {"agents": None, "speed": 10.0, "loop": False, "batch": 7}


def test_up_keeps_its_exit_status(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []

    def fake_up(settings: Settings, **kw: Any) -> int:
        seen.append(settings)
        return 3

    monkeypatch.setattr("surveil.up.run_up", fake_up)
    result = CliRunner().invoke(cli, ["up", "--port", "1", "--brokers", "h:2"])
    assert result.exit_code == 3
    assert seen[0].brokers == "h:2"


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_lists_the_global_options(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for option in ("--brokers", "--topic-prefix", "--data-dir", "-v, --verbose", "-h, --help"):
        assert option in result.output, (command, option)


@pytest.mark.usefixtures("root_level")
@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_after_the_command_turns_on_debug_logging(
        flag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = recorder(monkeypatch, "store")
    logging.getLogger().setLevel(logging.INFO)
    settings_of(seen, run(["store", flag]))
    assert logging.getLogger().level == logging.DEBUG


@pytest.mark.usefixtures("root_level")
def test_verbose_before_the_command_is_still_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = recorder(monkeypatch, "store")
    assert settings_of(seen, run(["-v", "store"])) == Settings()


def test_unknown_option_is_still_an_error() -> None:
    result = CliRunner().invoke(cli, ["worker", "--no-such-option"])
    assert result.exit_code == 2
    assert "No such option" in result.output
