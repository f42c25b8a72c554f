"""The ``surveil`` command line (DESIGN §3.7)."""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from streams.settings import Settings

__all__ = ["main"]

SPEEDS = ("1", "10", "100", "max")


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    base: Settings = ctx.obj
    return base.with_(**overrides)


# --- global options: accepted before and after the subcommand ---------------------------------

#: Parameter names of the global options, as the callbacks see them.
_GLOBAL_PARAMS = ("brokers", "topic_prefix", "data_dir", "verbose")


def _global_options(*, on_group: bool) -> list[click.Parameter]:
    """The global options ``--brokers``, ``--topic-prefix``, ``--data-dir`` and ``-v``.

    Parameters
    ----------
    on_group
        ``True`` for the ``surveil`` group: the options fall back to ``SURVEIL_*``. ``False``
        for a subcommand: no environment variable and a default of ``None``, so only a value
        given on the command line after the command overrides the group's settings (which
        already hold option > environment).

    Returns
    -------
    list of click.Parameter
        Fresh option objects, in the order ``--help`` lists them.
    """
    def env(name: str) -> str | None:
        return f"SURVEIL_{name}" if on_group else None

    where = "" if on_group else " Overrides the same option given before the command."
    return [
        click.Option(["--brokers"], envvar=env("BROKERS"),
                     help="Kafka bootstrap servers host:port[,…] (env SURVEIL_BROKERS)." + where),
        click.Option(["--topic-prefix"], envvar=env("TOPIC_PREFIX"),
                     help="Prefix for every topic name." + where),
        click.Option(["--data-dir"], envvar=env("DATA_DIR"), type=click.Path(path_type=Path),
                     help="Where the store lives (default ./var)." + where),
        click.Option(["-v", "--verbose"], is_flag=True, help="Debug logging."),
    ]


class _Command(click.Command):
    """A subcommand that also takes the global options (``surveil worker --brokers H:P``).

    They are removed from the parameters before the callback runs and folded into the
    :class:`~streams.settings.Settings` in ``ctx.obj``, which :func:`_settings` reads; values
    given here win over those given before the command and over ``SURVEIL_*``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_global_options(on_group=False))

    def invoke(self, ctx: click.Context) -> Any:
        _fold_globals(ctx)
        return super().invoke(ctx)


def _fold_globals(ctx: click.Context) -> None:
    given = {name: ctx.params.pop(name, None) for name in _GLOBAL_PARAMS}
    if given.pop("verbose"):
        logging.getLogger().setLevel(logging.DEBUG)
    base = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    ctx.obj = base.with_(**given)


class _Group(click.Group):
    """The ``surveil`` group; ``@cli.command()`` makes a :class:`_Command`."""

    command_class = _Command


class _SubGroup(_Group):
    """A group of subcommands (``surveil config get``) that takes the global options too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_global_options(on_group=False))

    def invoke(self, ctx: click.Context) -> Any:
        _fold_globals(ctx)
        return super().invoke(ctx)


@click.group(cls=_Group, params=_global_options(on_group=True),
             context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context, brokers: str | None, topic_prefix: str | None,
        data_dir: Path | None, verbose: bool) -> None:
    """m2m-surveillance: streaming surveillance of machine-to-machine markets.

    Each option below is also accepted after the command, e.g. surveil worker --brokers H:P,
    and wins there.
    """
    # The engine makes millions of short-lived acyclic objects (trades, id tuples): with the
    # default thresholds (a collection every 700 allocations) the cyclic collector took ~20%
    # of a worker's time. Collect less often; what imports built is never collected.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ctx.obj = Settings.from_env(brokers=brokers, topic_prefix=topic_prefix, data_dir=data_dir)


@cli.command()
@click.option("--port", type=int, default=9092, show_default=True)
@click.option("--partitions", type=int, default=1, show_default=True)
@click.pass_context
def broker(ctx: click.Context, port: int, partitions: int) -> None:
    """Run the embedded Kafka-protocol broker (Tansu) and create the topics."""
    from streams.broker import serve

    settings = _settings(ctx)

    def ready(bootstrap: str) -> None:
        click.echo(f"broker ready on {bootstrap}; topics: {', '.join(settings.topics.all())}")

    sys.exit(serve(port=port, topics=settings.topics.all(), partitions=partitions, ready=ready))


@cli.command()
@click.option("--partitions", type=int, help="Partitions for topics this command creates.")
@click.option("--session-timeout", type=float, help="Consumer-group session timeout (s).")
@click.option("--stage", type=click.Choice(["1", "2", "both"]), default="both",
              show_default=True, help="1 = per partition of trades, 2 = venue-wide.")
@click.pass_context
def worker(ctx: click.Context, partitions: int | None, session_timeout: float | None,
           stage: str) -> None:
    """Run a worker: trades in; alerts, halts, bars, summaries and dead letters out."""
    from streams.app import run_worker
    from streams.topics import ensure_topics

    settings = _settings(ctx, partitions=partitions, session_timeout_s=session_timeout)
    ensure_topics(settings.brokers, settings.topics.all(), partitions=settings.partitions)
    sys.exit(run_worker(settings, stages=stage))


@cli.command()
@click.pass_context
def store(ctx: click.Context) -> None:
    """Run the store writer: alerts, halts and bars into the analytics store."""
    from streams.store import run_store_writer
    from streams.topics import ensure_topics

    settings = _settings(ctx)
    ensure_topics(settings.brokers, settings.topics.all(), partitions=settings.partitions)
    click.echo(f"store writer: {settings.store_dir}")
    try:
        run_store_writer(settings)
    except KeyboardInterrupt:
        pass


@cli.command()
@click.option("--port", type=int, default=8501, show_default=True)
@click.pass_context
def dashboard(ctx: click.Context, port: int) -> None:
    """Serve the Streamlit dashboard (reads the store while the pipeline writes it)."""
    from dashboard.serve import serve, wait_ready

    settings = _settings(ctx)
    proc = serve(store_dir=settings.store_dir, port=port)
    try:
        wait_ready(port, 60)
        click.echo(f"dashboard: http://127.0.0.1:{port}")
        sys.exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(10)


@cli.command()
@click.argument("tape", type=click.Path(path_type=Path))
@click.option("--agents", type=click.Path(path_type=Path), help="Agent registry file.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="Runtime settings timeline (`surveil config get --export`).")
def backtest(tape: Path, agents: Path | None, out_dir: Path, config_file: Path | None) -> None:
    """Run a tape through the detectors offline; write alerts, halts and a summary to OUT."""
    from replay.backtest import run_backtest
    from replay.tape import TapeError
    from streams.runtime_config import ConfigError

    try:
        result = run_backtest(tape, out_dir=out_dir, agents=agents, keep_output=False,
                              settings_timeline=config_file)
    except (TapeError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    s = result.summary
    click.echo(f"{s['trades_read']} rows, {s['rejected']} rejected, {s['duplicates']} duplicates; "
               f"{s['alerts']} alerts {s['alerts_by_kind']}, {s['halts']} halts "
               f"{s['halts_by_state_reason']}; {s['trades_per_s']} trades/s -> {out_dir}")


@cli.command()
@click.argument("out_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--labels", type=click.Path(path_type=Path), required=True,
              help="labels.jsonl of the tape (DESIGN §3.4).")
@click.option("--grace", type=float, default=60.0, show_default=True,
              help="Seconds after an episode's end during which an alert still counts.")
@click.option("--lenient", is_flag=True,
              help="Let flash_crash/price_spike alerts detect contagion labels.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line of the figures.")
def evaluate(out_dir: Path, labels: Path, grace: float, lenient: bool, as_json: bool) -> None:
    """Score a backtest's alerts and halts (DIR) against labelled episodes."""
    from replay.evaluate import MARKET_ALIASES, EvaluationError, evaluate_dir, format_table

    try:
        ev = evaluate_dir(out_dir, labels, grace_s=grace,
                          aliases=MARKET_ALIASES if lenient else None)
    except EvaluationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_table(ev))
    if as_json:
        click.echo(json.dumps(ev.to_dict()))


@cli.group(name="config", cls=_SubGroup)
def config_group() -> None:
    """Runtime-tunable thresholds (per venue, asset class or instrument) on the config topic."""


@config_group.command(name="get")
@click.argument("scope", required=False)
@click.option("--history", is_flag=True, help="Every change with who, when and why.")
@click.option("--export", type=click.Path(path_type=Path),
              help="Write the timeline (JSON lines) for `surveil backtest --config`.")
@click.pass_context
def config_get(ctx: click.Context, scope: str | None, history: bool, export: Path | None) -> None:
    """Settings in force per SCOPE ('*', venue:V, class:C, instrument:NAME)."""
    from surveil.config_cmd import config_get as run

    run(_settings(ctx), scope, history=history, export=export)


@config_group.command(name="set")
@click.argument("scope")
@click.argument("values", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--note", required=True, help="Why (kept in the audit trail).")
@click.option("--user", default=lambda: os.environ.get("USER", "unknown"), show_default="$USER")
@click.option("--at", help="Effective event time (ISO-8601 or epoch s); default now + --lead.")
@click.option("--lead", type=float, default=30.0, show_default=True,
              help="Seconds ahead of now the change applies (every worker has it by then).")
@click.pass_context
def config_set(ctx: click.Context, scope: str, values: tuple[str, ...], note: str, user: str,
               at: str | None, lead: float) -> None:
    """Set thresholds of SCOPE (KEY=default removes one); validated before it is sent."""
    from surveil.config_cmd import config_set as run

    doc = run(_settings(ctx), scope, values, note=note, user=user, at=at, lead_s=lead)
    click.echo(json.dumps(doc))


@cli.command(name="evaluate-suite")
@click.option("--scenarios", default="all", show_default=True,
              help="Comma-separated scenario names, or 'all'.")
@click.option("--seeds", default="1-5", show_default=True, help="e.g. 1-5 or 1,4,9.")
@click.option("--duration", type=float, default=3600, show_default=True,
              help="Event-time seconds per simulated day.")
@click.option("--jobs", type=int, default=2, show_default=True, help="Processes in parallel.")
def evaluate_suite(scenarios: str, seeds: str, duration: float, jobs: int) -> None:
    """Simulate, backtest and score every scenario over several seeds (a Markdown table)."""
    from replay.evaluate_suite import format_suite, run_suite
    from replay.market.sim import SCENARIOS

    names = list(SCENARIOS) if scenarios == "all" else scenarios.split(",")
    bad = sorted(set(names) - set(SCENARIOS))
    if bad:
        raise click.BadParameter(f"unknown scenarios: {', '.join(bad)}")
    if "-" in seeds:
        lo, hi = seeds.split("-", 1)
        numbers = list(range(int(lo), int(hi) + 1))
    else:
        numbers = [int(x) for x in seeds.split(",")]
    click.echo(format_suite(run_suite(names, numbers, duration_s=duration, jobs=jobs)))


@cli.command()
@click.argument("tape", type=click.Path(path_type=Path))
@click.option("--agents", type=click.Path(path_type=Path), help="Agent registry file to publish.")
@click.option("--speed", type=click.Choice(SPEEDS), default="max", show_default=True,
              help="Event-time speed-up; max = as fast as the broker takes it.")
@click.option("--loop", is_flag=True, help="Start again at the end (until Ctrl-C).")
@click.option("--batch", type=int, default=500, show_default=True, help="Trades per message.")
@click.pass_context
def replay(ctx: click.Context, tape: Path, agents: Path | None, speed: str, loop: bool,
           batch: int) -> None:
    """Publish a tape to the trades topic in event-time order, batched."""
    from surveil.commands import replay_tape

    settings = _settings(ctx)
    replay_tape(settings, tape, agents=agents, speed=None if speed == "max" else float(speed),
                loop=loop, batch=batch)


#: replay.market.sim.SCENARIOS, without importing the simulator (tests/test_cli.py compares)
SCENARIOS = ("calm", "wash", "circular", "sybil", "flash_crash", "spike", "collusion",
             "competitive", "mixed", "honest")


@cli.command()
@click.option("--scenario", type=click.Choice(SCENARIOS), default="calm", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--duration", type=float, default=3600, show_default=True,
              help="Event-time seconds.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Write DIR/tape.parquet, DIR/agents.parquet, DIR/labels.jsonl.")
@click.option("--report", is_flag=True,
              help="collusion/competitive: train several sessions and report prices and Δ.")
@click.option("--sessions", type=int, default=16, show_default=True,
              help="Training sessions for --report.")
@click.option("--json", "as_json", is_flag=True, help="With --report: end with one JSON line.")
def simulate(scenario: str, seed: int, duration: float, out_dir: Path | None, report: bool,
             sessions: int, as_json: bool) -> None:
    """Simulate a machine-to-machine market day through the reference exchange."""
    from replay.market import simulate as run_sim
    from replay.market import write_outputs

    if report:
        if scenario not in ("collusion", "competitive"):
            raise click.UsageError("--report applies to --scenario collusion or competitive")
        from replay.market import report as run_report

        figures = run_report(scenario, seed=seed, sessions=sessions)
        for k in ("p_nash", "p_monopoly", "delta_mean", "delta_sd", "sessions", "runtime_s"):
            click.echo(f"{k:<12} {figures.get(k)}")
        if as_json:
            click.echo(json.dumps(figures))
        return
    if out_dir is None:
        raise click.UsageError("--out DIR is required (unless --report)")
    result = run_sim(scenario, seed=seed, duration_s=duration)
    paths = write_outputs(result, out_dir)
    s = result.stats
    click.echo(f"{s['trades']} trades, {s['agents']} agents, {s['labels']} labelled episodes "
               f"in {s['runtime_s']} s -> {', '.join(str(p) for p in paths.values())}")


@cli.command(name="exchange")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--crash-every", type=float, default=120.0, show_default=True,
              help="Plant a sell program or a buying frenzy every N seconds (0 = never).")
@click.option("--warmup", type=float, default=90.0, show_default=True,
              help="Seconds of live trading before the first planted event.")
@click.pass_context
def exchange_cmd(ctx: click.Context, seed: int, crash_every: float, warmup: float) -> None:
    """Run the reference exchange with a live agent-based market; it obeys halts."""
    from surveil.live import run_exchange

    run_exchange(_settings(ctx), seed=seed, crash_every=crash_every, warmup=warmup)


@cli.command()
@click.option("--rate", type=float, default=20.0, show_default=True,
              help="Trades per second per instrument.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--crash-every", type=float, default=300.0, show_default=True,
              help="Plant a crash or spike every N seconds (0 = never).")
@click.pass_context
def feed(ctx: click.Context, rate: float, seed: int, crash_every: float) -> None:
    """Publish a live synthetic market (event time = now) to the trades topic."""
    from surveil.commands import live_feed

    live_feed(_settings(ctx), rate=rate, seed=seed, crash_every=crash_every)


@cli.command()
@click.option("--trades", "n_trades", type=int, default=1_000_000, show_default=True)
@click.option("--batch", type=int, default=500, show_default=True, help="Trades per message.")
@click.option("--instruments", type=int, default=8, show_default=True)
@click.option("--latency-seconds", type=float, default=40.0, show_default=True,
              help="Wall-clock length of the latency phase.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line of the figures.")
def bench(n_trades: int, batch: int, instruments: int, latency_seconds: float,
          as_json: bool) -> None:
    """Measure decode ceiling, pipeline trades/s and publish→halt latency on the embedded broker."""
    from surveil.bench import run_bench

    figures = run_bench(n_trades=n_trades, batch=batch, instruments=instruments,
                        latency_s=latency_seconds, echo=click.echo)
    if as_json:
        click.echo(json.dumps(figures))


@cli.command()
@click.option("--port", type=int, default=9092, show_default=True, help="Embedded broker port.")
@click.option("--dashboard-port", type=int, default=8501, show_default=True)
@click.option("--crash-every", type=float, default=120.0, show_default=True,
              help="Plant a flash crash or a spike in the live market every N seconds.")
@click.option("--warmup", type=float, default=90.0, show_default=True,
              help="Seconds of live trading before the first planted event.")
@click.pass_context
def up(ctx: click.Context, port: int, dashboard_port: int, crash_every: float,
       warmup: float) -> None:
    """Everything: broker, worker, store writer, exchange with a live market, dashboard."""
    from surveil.up import run_up

    settings = _settings(ctx)
    # an external cluster when one was named (--brokers before or after `up`, or the env)
    external = settings.brokers != Settings().brokers or "SURVEIL_BROKERS" in os.environ
    sys.exit(run_up(settings, port=port, dashboard_port=dashboard_port,
                    crash_every=crash_every, warmup=warmup, external=external))


# --- signed halt channel: keys and the regulator's manual actions (surveil/regulator.py) -----
@cli.command()
@click.option("--rotate", "rotate_roles", multiple=True, type=click.Choice(["detector",
              "regulator"]), help="Make a new key for this role (repeatable).")
@click.option("--grace", type=float, default=86_400.0, show_default=True,
              help="Seconds a rotated-out public key stays valid.")
@click.pass_context
def keys(ctx: click.Context, rotate_roles: tuple[str, ...], grace: float) -> None:
    """Create (and rotate) the Ed25519 keys that sign halts, heartbeats and manual actions."""
    from surveil.regulator import manage_keys

    for line in manage_keys(_settings(ctx), rotate_roles=rotate_roles, grace_s=grace):
        click.echo(line)


def _manual_options(fn: Any) -> Any:
    for option in reversed([
        click.argument("instrument"),
        click.option("--note", required=True, help="Why (kept in the audit trail)."),
        click.option("--venue", default="default", show_default=True),
        click.option("--user", default=lambda: os.environ.get("USER", "unknown"),
                      show_default="$USER", help="Who (kept in the audit trail)."),
        click.option("--case", "case_id", help="Case id of the audit record "
                     "(default manual:VENUE:INSTRUMENT)."),
    ]):
        fn = option(fn)
    return fn


@cli.command(name="halt")
@_manual_options
@click.option("--reason", type=click.Choice(["MANUAL"]), default="MANUAL", show_default=True)
@click.option("--state", type=click.Choice(["HALTED", "PAUSED", "QUOTE_ONLY"]), default="HALTED",
              show_default=True)
@click.pass_context
def halt_cmd(ctx: click.Context, instrument: str, note: str, venue: str, user: str,
             case_id: str | None, reason: str, state: str) -> None:
    """Halt INSTRUMENT ("*" = the whole venue) by hand, signed with the regulator key."""
    from surveil.regulator import manual_action

    sent = manual_action(_settings(ctx), instrument, state=state, note=note, venue=venue,
                         user=user, case_id=case_id)
    click.echo(json.dumps(sent))


@cli.command(name="resume")
@_manual_options
@click.pass_context
def resume_cmd(ctx: click.Context, instrument: str, note: str, venue: str, user: str,
               case_id: str | None) -> None:
    """Lift a manual halt (and any detector halt) of INSTRUMENT ("*" = the venue) by hand."""
    from surveil.regulator import manual_action

    sent = manual_action(_settings(ctx), instrument, state="TRADING", note=note, venue=venue,
                         user=user, case_id=case_id)
    click.echo(json.dumps(sent))


def main() -> None:
    cli(prog_name="surveil")


if __name__ == "__main__":
    main()
