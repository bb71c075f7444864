"""The `cityops` command line (the contract in design.md)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from streams.archive_cli import archive_app
from streams.errors import CityOpsError
from streams.operator_cli import alarms_app
from streams.outbox_cli import outbox_app
from streams.replay_cli import replay

if TYPE_CHECKING:
    from streams.stack import StackStatus

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="cityops: city sensor readings -> alarms, through Kafka.")
stack_app = typer.Typer(no_args_is_help=True, help="The local stack: real Kafka (KRaft) + Redis.")
alerts_app = typer.Typer(no_args_is_help=True, help="Alarm events on the alerts topic.")
topology_app = typer.Typer(no_args_is_help=True, help="Validate topology.yaml and its sensor catalog.")
bench_app = typer.Typer(no_args_is_help=True, help="Offline benchmarks of the detectors.")
dashboards_app = typer.Typer(no_args_is_help=True, help="Grafana dashboards: build the JSON, push them to a Grafana.")
app.add_typer(stack_app, name="stack")
app.add_typer(alerts_app, name="alerts")
app.add_typer(topology_app, name="topology")
app.add_typer(bench_app, name="bench")
app.add_typer(alarms_app, name="alarms")
app.add_typer(outbox_app, name="outbox")
app.add_typer(dashboards_app, name="dashboards")
app.add_typer(archive_app, name="archive")
app.command("replay")(replay)

TopologyOpt = Annotated[Path, typer.Option("--topology", "-t", help="topology.yaml to use", envvar="CITYOPS_TOPOLOGY")]


@stack_app.command("up")
def stack_up(topology: TopologyOpt = Path("topology.yaml")) -> None:
    """Start Kafka and Redis (installing what is missing) and create the topics."""
    from streams import stack
    from streams.topology import load_topology

    topics = load_topology(topology).all_topics()
    status = stack.up(stack.StackConfig.from_env(), topics)
    _print_status(status)


@stack_app.command("down")
def stack_down() -> None:
    """Stop Kafka and Redis (data is kept under .stack/)."""
    from streams import stack

    _print_status(stack.down(stack.StackConfig.from_env()))


@stack_app.command("status")
def stack_status() -> None:
    """Show whether Kafka and Redis are running; exit 1 if not."""
    from streams import stack

    status = stack.status(stack.StackConfig.from_env())
    _print_status(status)
    raise typer.Exit(0 if status.all_running else 1)


def _print_status(status: StackStatus) -> None:
    for service in (status.kafka, status.redis):
        state = "running" if service.running else "stopped"
        pid = f" pid {service.pid}" if service.pid else ""
        typer.echo(f"{service.name:<6} {state:<8} {service.address}{pid}  {service.detail}".rstrip())


@app.command()
def worker(
    topology: TopologyOpt = Path("topology.yaml"),
    web_port: Annotated[Optional[int], typer.Option(help="metrics/health HTTP port")] = None,
    loglevel: Annotated[str, typer.Option(help="crit|error|warn|info|debug")] = "info",
    processes: Annotated[int, typer.Option(help="worker processes on this node (one core each), in one consumer "
                                                "group; process i serves its web port + i", min=1, max=256)] = 1,
    kinds: Annotated[Optional[str], typer.Option(help="consume only these kinds, comma-separated (default: all; "
                                                      "env CITYOPS_KINDS)")] = None,
    isolate: Annotated[Optional[str], typer.Option(help="kinds that get processes of their own, comma-separated, "
                                                        "e.g. hazmat: --processes for each of them and for the rest, "
                                                        "which run at a lower CPU priority (nice +10)")] = None,
) -> None:
    """Run the stream worker (one batch consumer per input topic)."""
    from streams.settings import Settings, owned_kinds, parse_kinds, select_kinds
    from streams.topology import load_topology

    settings = Settings.from_env(topology=topology, web_port=web_port,
                                 kinds=parse_kinds(kinds) if kinds is not None else None)
    if processes > 1 or isolate:
        from streams.processes import kind_groups, run_processes

        topo = load_topology(topology)
        mine = owned_kinds(settings, topo.spec.kinds)
        isolated = select_kinds(parse_kinds(isolate), mine, "--isolate", "a kind this worker consumes") if isolate else []
        base = [sys.executable, "-m", "streams.cli", "worker", "--topology", str(topology), "--loglevel", loglevel]
        groups = [group for group in kind_groups(mine, isolated) for _ in range(processes)]
        commands = [[*base, "--kinds", ",".join(group)] for group in groups]
        bulk = [bool(isolated) and not set(group) <= set(isolated) for group in groups]
        raise typer.Exit(run_processes(commands, settings.web_port, settings.data_dir, bulk))
    import faust

    from streams.app import create_app

    # Faust makes only the last level of its data dir, and a worker whose parent directory is
    # missing hung after logging the error instead of exiting
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    faust_app = create_app(settings)
    faust.Worker(faust_app, loglevel=loglevel).execute_from_commandline()


@app.command()
def deliver(
    topology: TopologyOpt = Path("topology.yaml"),
    metrics_port: Annotated[Optional[int], typer.Option(help="serve /metrics on this port", envvar="CITYOPS_DELIVER_PORT")] = None,
    loglevel: Annotated[str, typer.Option(help="error|warning|info|debug")] = "info",
) -> None:
    """POST the receivers' outboxes (for workers run with CITYOPS_DELIVERY=separate)."""
    import asyncio
    import logging

    from streams.deliver import run_delivery
    from streams.settings import Settings
    from streams.topology import load_topology

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env(topology=topology)
    asyncio.run(run_delivery(settings, load_topology(settings.topology), metrics_port))


@app.command()
def simulate(
    rate: Annotated[float, typer.Option(help="readings per second, all sensors together", min=0.1)] = 200.0,
    duration: Annotated[float, typer.Option(help="seconds to run", min=0.1)] = 60.0,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same city)")] = 0,
    scenario: Annotated[Optional[Path], typer.Option(help="incident scenario YAML (default: the packaged one)")] = None,
    speed: Annotated[float, typer.Option(help="simulated seconds per real second", min=0.001)] = 1.0,
    out: Annotated[Optional[Path], typer.Option(help="write JSONL here instead of Kafka")] = None,
    truth: Annotated[Optional[Path], typer.Option(help="write the incidents' ground truth (JSONL) here")] = None,
    no_pace: Annotated[bool, typer.Option("--no-pace", help="do not wait for real time")] = False,
    topology: TopologyOpt = Path("topology.yaml"),
) -> None:
    """Simulate Dongguan's sensors, with scripted incidents and their ground truth."""
    from streams.settings import Settings
    from streams.sim.runner import SimOptions
    from streams.sim.runner import simulate as run_simulation

    opts = SimOptions(rate=rate, duration_s=duration, seed=seed, scenario=scenario, speed=speed)
    bootstrap = None if out else Settings.from_env().bootstrap
    typer.echo(str(run_simulation(topology, opts, bootstrap, out, truth, pace=not no_pace)))


@app.command()
def produce(
    file: Annotated[Path, typer.Argument(help="JSONL file: each line is sent as one message, bytes unchanged")],
    topic: Annotated[str, typer.Option("--topic", help="Kafka topic to publish to")],
) -> None:
    """Publish recorded (or malformed) readings as-is, keyed by their sensor_id.

    Exit 1 if the broker refused any line (each is named with its reason).
    """
    from streams.produce import produce_file
    from streams.settings import Settings

    if not file.is_file():
        raise CityOpsError(f"FILE: {file} does not exist or is not a file")
    result = asyncio.run(produce_file(Settings.from_env().bootstrap, topic, file))
    typer.echo(f"published {result.published} messages to {topic}")
    if result.refused:
        for line_no, reason in result.details:
            typer.echo(f"{file}:{line_no}: refused: {reason}", err=True)
        more = result.refused - len(result.details)
        typer.echo(f"{result.refused} lines were not published" + (f" ({more} more not listed)" if more else ""), err=True)
        raise typer.Exit(1)


@alerts_app.command("tail")
def alerts_tail(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON alert per line")] = False,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="start at the oldest alert")] = False,
    max_alerts: Annotated[Optional[int], typer.Option("--max", help="stop after this many alerts", min=1)] = None,
    timeout: Annotated[Optional[float], typer.Option(help="stop after this many idle seconds", min=0.1)] = None,
    topology: TopologyOpt = Path("topology.yaml"),
) -> None:
    """Follow alarm events as they arrive."""
    from streams.settings import Settings
    from streams.tail import tail_alerts
    from streams.topology import load_topology

    topic = load_topology(topology).spec.topics.alerts
    asyncio.run(tail_alerts(Settings.from_env().bootstrap, topic, as_json, from_beginning, max_alerts, timeout))


@topology_app.command("check")
def topology_check(file: Annotated[Path, typer.Argument(help="topology file")] = Path("topology.yaml")) -> None:
    """Validate a topology file; exit 2 with every problem found."""
    from streams.topology import load_topology

    topo = load_topology(file)
    kinds = ", ".join(f"{k} ({len(topo.catalog.by_kind(k))} sensors)" for k in topo.spec.kinds)
    typer.echo(f"{file}: ok — {kinds}; {len(topo.spec.detectors)} detectors, {len(topo.spec.routes)} routes")


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="seconds to run; 0 runs until Ctrl-C", min=0)] = 0,
    rate: Annotated[float, typer.Option(help="simulated readings per second", min=1)] = 300.0,
    topology: TopologyOpt = Path("topology.yaml"),
) -> None:
    """Worker + simulated city on the running stack; alarms shown live."""
    from streams import stack
    from streams.demo import run_demo
    from streams.settings import Settings
    from streams.topology import load_topology

    cfg = stack.StackConfig.from_env()
    if not stack.status(cfg).all_running:
        raise CityOpsError("the stack is not running; start it with `cityops stack up` (or use `make demo`)")
    topo = load_topology(topology)
    try:
        asyncio.run(run_demo(topo, Settings.from_env(topology=topology), duration, rate, cfg.root / "demo"))
    except KeyboardInterrupt:
        pass


@dashboards_app.command("build")
def dashboards_build(
    out: Annotated[Path, typer.Option("--out", help="directory for the JSON files")] = Path("dashboards"),
) -> None:
    """Write dashboards/*.json from streams/dashboards.py (the one source of truth)."""
    from streams.dashboards import write_all

    for path in write_all(out):
        typer.echo(f"wrote {path}")


@dashboards_app.command("push")
def dashboards_push(
    url: Annotated[str, typer.Option("--url", help="Grafana base URL, e.g. http://grafana:3000")],
    token: Annotated[Optional[str], typer.Option("--token", envvar="GRAFANA_TOKEN",
                                                 help="service-account token (Editor); default $GRAFANA_TOKEN")] = None,
    prometheus_url: Annotated[str, typer.Option("--prometheus-url", help="the data source URL, as Grafana reaches it")]
    = "http://localhost:9090",
    folder_uid: Annotated[Optional[str], typer.Option("--folder-uid", help="save into this folder")] = None,
) -> None:
    """Provision the Prometheus data source and every dashboard (idempotent)."""
    from streams.grafana_push import push

    result = push(url, token, prometheus_url, folder_uid=folder_uid)
    typer.echo(f"data source cityops-prometheus {result.datasource} ({prometheus_url}); "
               f"dashboards: {', '.join(result.dashboards)}")


@bench_app.command("nab")
def bench_nab(
    data: Annotated[Path, typer.Option("--data", help="folder holding <category>/<file>.csv (timestamp,value)")],
    out: Annotated[Path, typer.Option("--out", help="folder for <category>/<file>.csv (timestamp,anomaly_score)")],
) -> None:
    """Score NAB-format CSVs with the production ensemble detector (causal, one parameter set)."""
    from streams.bench_nab import run_bench

    files, rows = run_bench(data, out)
    typer.echo(f"scored {rows} rows in {files} files -> {out}")


def main() -> None:
    """Entry point: user mistakes print one clear message, never a traceback."""
    try:
        app()
    except CityOpsError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
