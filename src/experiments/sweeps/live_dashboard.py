"""``python -m experiments.sweep_dashboard <sweep folder> [--port N]``: the sweep's study, live, in a browser.

Serves `optuna-dashboard` (history, parallel coordinates, parameter importances, every trial with
its intermediate values and user attributes: run folder, failure reason, pruning record, worker) for
the Optuna storage of a sweep folder, on this machine only (``127.0.0.1``) unless ``--host`` says
otherwise, until Ctrl-C. It reads the same database the workers write, so a running sweep shows its
trials as they finish. ``sweep_report`` stays the offline view (run folders only, no server).

The storage is ``<sweep folder>/optuna.db`` (the default ``storage: sweep_dir``), else the URL the
sweep's ``multirun.yaml`` names, else ``--storage``.
"""

from __future__ import annotations

import argparse
import socketserver
import sys
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from experiments.core.errors import EXIT_USER_ERROR, UserError, report
from experiments.sweeps.identity import DB_FILE, STORAGE_IN_SWEEP_DIR

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"


def storage_of(sweep_dir: Path, storage: str | None = None) -> str:
    """The storage URL of a sweep folder (``storage`` wins when given)."""
    if storage:
        return storage
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError("sweep folder", str(sweep_dir), "does not exist.",
                        "Pass the folder a sweep printed, e.g. outputs/sweeps/<study>.")
    if (sweep_dir / DB_FILE).is_file():
        return f"sqlite:///{(sweep_dir / DB_FILE).resolve()}"
    configured = _configured_storage(sweep_dir)
    if configured:
        return configured
    raise UserError("sweep folder", str(sweep_dir), f"has no {DB_FILE}, and its multirun.yaml names no database "
                    "(a study kept in memory, or a sweep of Hydra's basic sweeper, leaves nothing to serve).",
                    "Pass --storage <Optuna storage URL>, or look at it offline: python -m experiments.sweep_report "
                    f"{sweep_dir}.")


def _configured_storage(sweep_dir: Path) -> str | None:
    from omegaconf import OmegaConf

    config_file = sweep_dir / "multirun.yaml"
    if not config_file.is_file():
        return None
    value = OmegaConf.select(OmegaConf.load(config_file), "hydra.sweeper.storage", default=None,
                             throw_on_missing=False)
    return None if value in (None, STORAGE_IN_SWEEP_DIR) else str(value)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per request is noise here
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def make_dashboard_server(url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> WSGIServer:
    """A WSGI server for optuna-dashboard on ``url``, bound but not yet serving."""
    import optuna_dashboard

    from experiments.sweeps.storage import open_storage

    app = optuna_dashboard.wsgi(open_storage(url))
    try:
        return make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as error:
        raise UserError("--port", port, f"cannot be used on {host} ({error.strerror or error}).",
                        "Pick a free port, e.g. --port 8081.") from None


def study_names(url: str) -> list[str]:
    import optuna

    from experiments.sweeps.storage import open_storage

    return optuna.get_all_study_names(open_storage(url))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep_dashboard",
                                     description=__doc__.split("\n\n")[0].split(": ", 1)[-1])
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (outputs/sweeps/<study>)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: "
                        "this machine only; reach it from elsewhere through ssh -L)")
    parser.add_argument("--storage", default=None, help="an Optuna storage URL instead of the folder's")
    args = parser.parse_args(argv)
    try:
        url = storage_of(args.sweep_dir, args.storage)
        names = study_names(url)
        server = make_dashboard_server(url, args.host, args.port)
    except UserError as error:
        report(error)
        sys.exit(EXIT_USER_ERROR)
    shown = "localhost" if args.host in ("127.0.0.1", "localhost") else args.host
    print(f"Optuna dashboard of {', '.join(names) or 'no study yet'} ({url})\n"
          f"  http://{shown}:{server.server_port}/dashboard   (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\ndashboard stopped", flush=True)
    finally:
        server.server_close()
