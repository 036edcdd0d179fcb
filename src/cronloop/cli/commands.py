"""The CLI commands that talk to the API server: apply, get, describe, logs, run and actions.

:func:`register` adds them to the ``cronloop`` Typer app. Each command resolves the server
and token (``--server``/``--token``, ``CRONLOOP_SERVER``/``CRONLOOP_TOKEN``, or
``<state dir>/credentials.json``), makes its calls through :class:`~cronloop.cli.client.
CronloopClient`, and reports any failure as one line ``error: ...`` with exit status 1 (2 for
bad usage). Files are validated locally before anything is sent, with the same messages the
server would give.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cronloop.api import (
    CronJob,
    Job,
    Resource,
    ResourceError,
    SubJob,
    dump,
    load_sources,
    parse_resource,
)
from cronloop.cli.client import ClientError, CronloopClient, resolve_connection
from cronloop.cli.render import (
    columns_for,
    describe_cronjob,
    describe_job,
    row_for,
    table,
)

__all__ = ["register"]

_PLURALS = {
    "cronjob": "cronjobs",
    "cronjobs": "cronjobs",
    "cj": "cronjobs",
    "job": "jobs",
    "jobs": "jobs",
    "subjob": "subjobs",
    "subjobs": "subjobs",
    "sj": "subjobs",
}
_KIND = {"cronjobs": "CronJob", "jobs": "Job", "subjobs": "SubJob"}
_OUTPUTS = ("wide", "yaml", "json")

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="CRONLOOP_SERVER",
        help="URL of the cronloop server (default: from <state dir>/credentials.json).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="CRONLOOP_TOKEN",
        help="API token (default: from <state dir>/credentials.json).",
        show_default=False,
        show_envvar=True,
    ),
]
StateDirOption = Annotated[
    Path,
    typer.Option("--state-dir", help="Where `cronloop up` keeps its state and credentials."),
]
CronJobArgument = Annotated[str, typer.Argument(help="The CronJob.")]
JobArgument = Annotated[str, typer.Argument(help="The Job.")]
KindArgument = Annotated[str, typer.Argument(help="cronjob or job.")]
NameArgument = Annotated[str, typer.Argument(help="Its name.")]
_DEFAULT_STATE_DIR = Path(".cronloop")
_RENDER_WIDTH = 4096


def _out() -> Console:
    # soft_wrap: long lines (YAML, JSON, watch lines) are printed whole, never re-wrapped.
    return Console(highlight=False, soft_wrap=True)


def _emit(renderable: RenderableType) -> None:
    """Print a table or a describe page without wrapping it (like ``kubectl``), right-trimmed.

    Rich would squeeze a wide table into the terminal's width by wrapping cells; rows that
    stay whole are easier to read and to ``grep``.
    """
    console = Console(width=_RENDER_WIDTH, highlight=False)
    with console.capture() as capture:
        console.print(renderable)
    typer.echo("\n".join(line.rstrip() for line in capture.get().splitlines()))


def _print_error(message: str) -> None:
    """``error: <message>`` on stderr, always on one line (never wrapped by Rich)."""
    one_line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"error: {one_line}", markup=False)


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as the error line; return the ``Exit`` to raise."""
    _print_error(message)
    return typer.Exit(code)


@contextlib.contextmanager
def _client(server: str | None, token: str | None, state_dir: Path) -> Iterator[CronloopClient]:
    """A connected client; any :class:`ClientError` inside becomes ``error: ...`` and exit 1."""
    try:
        url, secret = resolve_connection(server, token, state_dir)
        with CronloopClient(url, secret) as client:
            yield client
    except ClientError as exc:
        raise _fail(exc.message) from None


def _call(
    server: str | None,
    token: str | None,
    state_dir: Path,
    request: Callable[[CronloopClient], object],
    done: str,
) -> None:
    """The body of a one-request command: send ``request``, then print ``done``."""
    with _client(server, token, state_dir) as client:
        request(client)
        _out().print(done, markup=False)


def _plural(resource: str, allowed: tuple[str, ...] = ("cronjobs", "jobs", "subjobs")) -> str:
    plural = _PLURALS.get(resource.lower())
    if plural is None or plural not in allowed:
        raise typer.BadParameter(
            f"{resource!r} is not a resource type here (expected one of {', '.join(allowed)})",
            param_hint="RESOURCE",
        )
    return plural


def _typed(data: dict[str, Any]) -> Resource:
    return parse_resource(data, source="server response")


def _one_line(exc: ResourceError) -> str:
    problems = "; ".join(f"{path}: {msg}" if path else msg for path, msg in exc.problems)
    return f"{exc.where}: {problems}"


def _yaml_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise _fail(f"{path}: no *.yaml or *.yml files in this directory")
        return files
    if not path.exists():
        raise _fail(f"{path}: no such file or directory")
    return [path]


def _load(path: Path) -> list[Resource]:
    """Every resource of every YAML file at ``path``, validated; exits naming every problem.

    Each invalid document gets its own ``error:`` line with all its bad fields.
    """
    sources: list[tuple[str, str]] = []
    for file in _yaml_files(path):
        try:
            sources.append((str(file), file.read_text()))
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(f"{file}: cannot read: {exc}") from None
    try:
        resources = load_sources(sources)
    except ResourceError as exc:
        for error in exc.errors:
            _print_error(_one_line(error))
        raise typer.Exit(1) from None
    if not resources:
        raise _fail(f"{path}: no resources found")
    return resources


def _now() -> datetime:
    return datetime.now(UTC)


# ---- apply / run -----------------------------------------------------------------------------


def apply(
    filename: Annotated[
        Path, typer.Option("-f", "--filename", help="A YAML file, or a directory of them.")
    ],
    server: ServerOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = _DEFAULT_STATE_DIR,
) -> None:
    """Create or update the resources in FILE (every *.yaml/*.yml of a directory)."""
    resources = _load(filename)
    for resource in resources:
        if isinstance(resource, SubJob):
            raise _fail(
                f'{filename}: SubJob "{resource.metadata.name}": SubJobs are created by their '
                "Job and cannot be applied"
            )
    failed = False
    console = _out()
    with _client(server, token, state_dir) as client:
        for resource in resources:
            plural = _PLURALS[resource.kind.lower()]
            ref = f"{resource.kind.lower()}/{resource.metadata.name}"
            try:
                _, outcome = client.apply(plural, dump(resource))
            except ClientError as exc:
                if exc.status is None:
                    raise
                _print_error(exc.message)
                failed = True
                continue
            console.print(f"{ref} {outcome}", markup=False)
    if failed:
        raise typer.Exit(1)


def run(
    filename: Annotated[Path, typer.Option("-f", "--filename", help="A YAML file with one Job.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress; exit 0 only if the Job succeeds.")
    ] = False,
    server: ServerOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = _DEFAULT_STATE_DIR,
) -> None:
    """Create the Job in FILE now (and with --wait, follow it to its end)."""
    resources = _load(filename)
    jobs = [r for r in resources if isinstance(r, Job)]
    if len(jobs) != 1 or len(resources) != 1:
        kinds = ", ".join(r.kind for r in resources)
        raise _fail(f"{filename}: expected exactly one Job, found {len(resources)} ({kinds})")
    with _client(server, token, state_dir) as client:
        created = client.create("jobs", dump(jobs[0]))
        name = created["metadata"]["name"]
        _out().print(f"job/{name} created", markup=False)
        if wait:
            _finish(_wait_for_job(client, name))


# ---- waiting ---------------------------------------------------------------------------------


def _progress_total(job: Job) -> int | None:
    return job.status.counts.total or job.spec.targets.count


def _wait_for_job(client: CronloopClient, name: str) -> Job:
    """Follow Job ``name`` through the watch stream until it ends, with a progress bar."""
    data = client.get("jobs", name)
    job = _typed(data)
    assert isinstance(job, Job)
    if job.status.phase.terminal:
        return job
    revision = int(data["metadata"]["resourceVersion"])
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("sub-jobs succeeded"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task(
            f"{name} {job.status.phase.value}",
            total=_progress_total(job),
            completed=job.status.counts.succeeded,
        )
        # Closed explicitly on break: the stream's connection must not wait for the GC.
        events = contextlib.closing(client.watch(["Job"], from_revision=revision))
        with events as stream:
            for event in stream:
                obj = event["object"]
                if obj["metadata"]["name"] != name:
                    continue
                if event["type"] == "DELETED":
                    raise ClientError(f'Job "{name}" was deleted before it finished')
                current = _typed(obj)
                assert isinstance(current, Job)
                job = current
                progress.update(
                    task,
                    description=f"{name} {job.status.phase.value}",
                    total=_progress_total(job),
                    completed=job.status.counts.succeeded,
                )
                if job.status.phase.terminal:
                    break
    return job


def _finish(job: Job) -> None:
    status = job.status
    line = f"job/{job.metadata.name} {status.phase.value}"
    detail = ": ".join(p for p in (status.reason, status.message) if p)
    if detail:
        line += f" ({detail})"
    _out().print(line, markup=False)
    if status.phase.value != "Succeeded":
        raise typer.Exit(1)


# ---- get / describe --------------------------------------------------------------------------


def _parse_selector(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    selector = {}
    for term in text.split(","):
        key, sep, value = term.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{term!r} is not key=value", param_hint="--selector")
        selector[key.strip()] = value.strip()
    return selector


def _print_objects(items: list[dict[str, Any]], output: str | None, single: bool) -> None:
    console = _out()
    if output == "json":
        console.print_json(json.dumps(items[0] if single else items))
    elif output == "yaml":
        text = (
            yaml.safe_dump(items[0], sort_keys=False)
            if single
            else yaml.safe_dump_all(items, sort_keys=False)
        )
        console.print(text.rstrip("\n"), markup=False)


def _watch_line(kind: str, event: dict[str, Any], wide: bool, widths: list[int]) -> str:
    resource = _typed(event["object"])
    row = row_for(resource, _now(), wide=wide)
    cells = [event["type"].ljust(9)]
    for index, cell in enumerate(row):
        width = widths[index] if index < len(widths) else 0
        cells.append(cell.ljust(width))
    return "  ".join(cells).rstrip()


def get(
    resource: Annotated[str, typer.Argument(help="cronjobs, jobs or subjobs.")],
    name: Annotated[str | None, typer.Argument(help="Only this object.")] = None,
    watch: Annotated[
        bool, typer.Option("-w", "--watch", help="After listing, print every change.")
    ] = False,
    output: Annotated[
        str | None, typer.Option("-o", "--output", help="wide, yaml or json.")
    ] = None,
    selector: Annotated[
        str | None, typer.Option("-l", "--selector", help="Label selector: key=value,...")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="With --watch: stop after this many seconds.", min=0),
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = _DEFAULT_STATE_DIR,
) -> None:
    """List resources (or show one) as a table, YAML or JSON; -w keeps printing changes."""
    plural = _plural(resource)
    kind = _KIND[plural]
    if output is not None and output not in _OUTPUTS:
        raise typer.BadParameter(
            f"{output!r} is not an output format (expected {', '.join(_OUTPUTS)})",
            param_hint="--output",
        )
    labels = _parse_selector(selector)
    wide = output == "wide"
    with _client(server, token, state_dir) as client:
        if name is not None:
            item = client.get(plural, name)
            items = [item]
            revision = int(item["metadata"]["resourceVersion"])
        else:
            listed = client.list(plural, label_selector=labels)
            items = listed["items"]
            revision = int(listed["metadata"]["resourceVersion"])
        now = _now()
        rows = [row_for(_typed(i), now, wide=wide) for i in items]
        columns = columns_for(kind, wide=wide)
        if output in ("yaml", "json"):
            _print_objects(items, output, single=name is not None)
        elif rows or watch:
            _emit(table(columns, rows))
        else:
            _out().print(f"No {plural} found.", markup=False)
        if not watch:
            return
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        _follow(client, kind, name, labels, revision, output, wide, widths, timeout)


def _matches(event: dict[str, Any], name: str | None, labels: dict[str, str] | None) -> bool:
    meta = event["object"]["metadata"]
    if name is not None and meta["name"] != name:
        return False
    have = meta.get("labels", {})
    return all(have.get(k) == v for k, v in (labels or {}).items())


def _event_text(
    kind: str, event: dict[str, Any], output: str | None, wide: bool, widths: list[int]
) -> str:
    if output == "json":
        return json.dumps(event)
    if output == "yaml":
        return "---\n" + yaml.safe_dump(event, sort_keys=False).rstrip()
    return _watch_line(kind, event, wide, widths)


def _follow(
    client: CronloopClient,
    kind: str,
    name: str | None,
    labels: dict[str, str] | None,
    revision: int,
    output: str | None,
    wide: bool,
    widths: list[int],
    timeout: float | None,
) -> None:
    console = _out()
    try:
        events = contextlib.closing(client.watch([kind], from_revision=revision, timeout=timeout))
        with events as stream:
            for event in stream:
                if _matches(event, name, labels):
                    console.print(_event_text(kind, event, output, wide, widths), markup=False)
    except KeyboardInterrupt:
        return


def describe(
    resource: KindArgument,
    name: NameArgument,
    server: ServerOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = _DEFAULT_STATE_DIR,
) -> None:
    """Show a CronJob (spec, status, recent runs) or a Job (status, sub-jobs, attempts)."""
    plural = _plural(resource, ("cronjobs", "jobs"))
    with _client(server, token, state_dir) as client:
        obj = _typed(client.get(plural, name))
        now = _now()
        uid = obj.metadata.uid
        if isinstance(obj, CronJob):
            runs = [_typed(i) for i in client.list("jobs", owner=uid)["items"]]
            jobs = [r for r in runs if isinstance(r, Job)]
            jobs.sort(key=lambda j: j.metadata.creation_timestamp or now)
            _emit(describe_cronjob(obj, jobs[-10:], now))
        else:
            assert isinstance(obj, Job)
            subs = [_typed(i) for i in client.list("subjobs", owner=uid)["items"]]
            _emit(describe_job(obj, [s for s in subs if isinstance(s, SubJob)], now))


# ---- logs / actions --------------------------------------------------------------------------


def logs(
    job: JobArgument,
    target: Annotated[
        str | None, typer.Option("--target", help="Only this target (default: all, prefixed).")
    ] = None,
    attempt: Annotated[
        int | None,
        typer.Option(
            "--attempt",
            help="Only attempt N (default: the latest run, its prepare and main steps).",
            min=1,
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("-f", "--follow", help="Keep printing until the run (or attempt N) is over."),
    ] = False,
    server: ServerOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = _DEFAULT_STATE_DIR,
) -> None:
    r"""Print a Job's logs: each target's latest run (prepare and main steps), or attempt N.

    Without --target every target's, each line prefixed \[target].
    """
    with _client(server, token, state_dir) as client:
        try:
            for chunk in client.logs(job, target=target, attempt=attempt, follow=follow):
                typer.echo(chunk, nl=False)
        except KeyboardInterrupt:
            return


def trigger(
    cronjob: CronJobArgument,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the run; exit 0 only if it succeeds.")
    ] = False,
    server: ServerOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = _DEFAULT_STATE_DIR,
) -> None:
    """Start a run of CRONJOB now."""
    with _client(server, token, state_dir) as client:
        created = client.trigger(cronjob)
        name = created["metadata"]["name"]
        _out().print(f"job/{name} created (triggered cronjob/{cronjob})", markup=False)
        if wait:
            _finish(_wait_for_job(client, name))


def suspend(
    cronjob: CronJobArgument,
    server: ServerOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = _DEFAULT_STATE_DIR,
) -> None:
    """Stop scheduling CRONJOB (running runs go on)."""
    _call(server, token, state_dir, lambda c: c.suspend(cronjob), f"cronjob/{cronjob} suspended")


def resume(
    cronjob: CronJobArgument,
    server: ServerOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = _DEFAULT_STATE_DIR,
) -> None:
    """Schedule CRONJOB again (missed times follow its catchUp policy)."""
    _call(server, token, state_dir, lambda c: c.resume(cronjob), f"cronjob/{cronjob} resumed")


def cancel(
    job: JobArgument,
    server: ServerOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = _DEFAULT_STATE_DIR,
) -> None:
    """Ask for JOB to be cancelled (its running attempts are stopped)."""
    _call(server, token, state_dir, lambda c: c.cancel(job), f"job/{job} cancel requested")


def delete(
    resource: KindArgument,
    name: NameArgument,
    server: ServerOption = None,
    token: TokenOption = None,
    state_dir: StateDirOption = _DEFAULT_STATE_DIR,
) -> None:
    """Delete a CronJob (with its runs) or a Job (with its sub-jobs)."""
    plural = _plural(resource, ("cronjobs", "jobs"))
    done = f"{_KIND[plural].lower()}/{name} deleted"
    _call(server, token, state_dir, lambda c: c.delete(plural, name), done)


def register(app: typer.Typer) -> None:
    """Add the server commands to ``app`` (the ``cronloop`` command)."""
    for command in (apply, get, describe, logs, run, trigger, suspend, resume, cancel, delete):
        app.command(command.__name__)(command)
