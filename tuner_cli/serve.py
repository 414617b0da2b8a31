"""The service's subcommands of `tuner` (serve, api, worker). Only argparse is imported here; each
command imports the web and queue stacks when it runs, so the library CLI stays light."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from tuner_model.core.errors import TunerError


def settings_from_env(**overrides: object):  # noqa: ANN202
    """Settings from TUNER_* variables (and overrides), or a one-line TunerError."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise TunerError(f"bad setting {where}: {msg}" if where else f"bad settings: {msg}") from None


def is_loopback(host: str) -> bool:
    """An address this machine alone reaches: `localhost` or a loopback IP (127.0.0.0/8, ::1), exactly; a name
    that merely starts with `127.` (127.example.com) resolves anywhere."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings, host: str) -> None:  # noqa: ANN001
    """An API without keys is open to whoever reaches it: fine on loopback, refused anywhere else."""
    if is_loopback(host):
        return
    from service.access.keys import KeyRing
    from service.records import Database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.auth == "off" or not KeyRing(settings, Database(settings.resolved_database_url)).required():
        raise TunerError(f"refusing to listen on {host} without API keys: anyone could use the service. Create a "
                         "key with `tuner keys create --tenant NAME` (or set TUNER_BOOTSTRAP_KEY), "
                         "or listen on 127.0.0.1")


def _run_api(settings, host: str, port: int) -> int:  # noqa: ANN001
    import contextlib

    import uvicorn

    from service.api.app import create_app
    from service.api.server import uvicorn_config

    check_exposure(settings, host)

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # noqa: ANN202
            # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would kill us before
            # `serve` stops its worker; a plain return lets the caller's cleanup run.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

    # Header and body deadlines, a connection cap, proxies believed only when named (service/api/server.py).
    config = uvicorn_config(create_app(settings), settings, host, port, log_level="info", access_log=False)
    _Server(config).run()
    return 0


def _die_with_parent() -> None:
    """In the `serve` worker before exec: Linux sends it SIGTERM if `serve` itself is killed."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def cmd_api(args: argparse.Namespace) -> int:
    return _run_api(settings_from_env(), args.host, args.port)


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.app import FIT_QUEUE, create_celery

    settings = settings_from_env(worker_concurrency=args.concurrency)
    app = create_celery(settings, with_tasks=True)
    argv = ["worker", "--queues", FIT_QUEUE, "--pool", "prefork",
            "--concurrency", str(settings.worker_concurrency), "--loglevel", args.loglevel,
            "--hostname", f"fit-{os.getpid()}@%h", "--without-gossip", "--without-mingle"]
    app.worker_main(argv)
    return 0


def _declare_fit_queue(broker_url: str) -> None:
    """Create the fit queue before the worker and the API both use it. kombu's SQL transport adds a queue's
    row on its first use, and two processes doing that at once (the worker starting, the API sending the
    first job) crash the worker on the row's UNIQUE constraint (seen in CI); with the row there first,
    neither inserts it."""
    from kombu import Connection, Queue

    from service.jobqueue import FIT_QUEUE

    with Connection(broker_url) as conn:
        Queue(FIT_QUEUE)(conn.default_channel).declare()


def cmd_serve(args: argparse.Namespace) -> int:
    """The API and one local worker on an embedded broker (SQLite via kombu's SQLAlchemy transport): the
    same Celery code path as production, with nothing else to install or start."""
    from service.settings import Settings

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Other TUNER_* settings apply; the data dir and broker come from the command line.
    env = {**os.environ, "TUNER_DATA_DIR": str(data_dir)}
    env.pop("TUNER_BROKER_URL", None)
    if args.broker:
        env["TUNER_BROKER_URL"] = args.broker
    settings = settings_from_env(data_dir=data_dir)
    # The API and its worker are one service here: not ready while no worker beats.
    settings = Settings(**{**settings.model_dump(), "broker_url": args.broker, "ready_needs_worker": True})
    check_exposure(settings, args.host)  # before the worker starts, so a refusal leaves nothing running
    _declare_fit_queue(settings.resolved_broker_url)
    # Its own session, so a Ctrl-C in the terminal reaches only `serve`, which then stops it in order.
    # It is restarted whenever it exits while serve runs (tuner_cli/supervise.py).
    from tuner_cli.supervise import WorkerSupervisor

    worker = WorkerSupervisor(lambda: subprocess.Popen(
        [sys.executable, "-m", "tuner_cli", "worker", "--loglevel", args.loglevel],
        env=env, start_new_session=True, preexec_fn=_die_with_parent))
    worker.start()
    try:
        return _run_api(settings, args.host, args.port)
    finally:
        worker.stop()


def register(sub: argparse._SubParsersAction) -> None:
    """Adds `tuner serve`, `tuner api` and `tuner worker`."""
    s = sub.add_parser("serve", help="run the API and a local worker: no Redis, no GPU needed")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--data-dir", default=os.environ.get("TUNER_DATA_DIR", "./tuner-data"))
    s.add_argument("--broker", default=None, help="a broker URL instead of the embedded one (e.g. redis://...)")
    s.add_argument("--loglevel", default="INFO")
    s.set_defaults(func=cmd_serve)

    a = sub.add_parser("api", help="run the HTTP API (configured by TUNER_* environment variables)")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8000)
    a.set_defaults(func=cmd_api)

    w = sub.add_parser("worker", help="run a fit worker on the `fit` queue (TUNER_* environment variables)")
    w.add_argument("--concurrency", type=int, default=None, help="fits at a time (default TUNER_WORKER_CONCURRENCY, 1)")
    w.add_argument("--loglevel", default="INFO")
    w.set_defaults(func=cmd_worker)
