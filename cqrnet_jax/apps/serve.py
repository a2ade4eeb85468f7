"""`cqrnet-jax serve`: a local web page to restore JPEGs: drop files in, compare, download.

For each dropped image the page shows the quality its header says and the ranker's estimate
(as `estimate`), the warnings `deblock` gives (above the model's range, not a JPEG), a
before/after view with a slider and a zoom, a strength control (the model takes no quality, so
strength blends: the input plus that share of the restoration's change), progress over the tiles
of a big photo, and downloads: each result as PNG, all as one zip. At full strength the PNG is
what `deblock` writes for the same file (the same `restore_file`, the same defaults; "restore
anyway" is `--force`), checked pixel for pixel by tests/test_serve_browser.py.

Built on Starlette and uvicorn, with one static page of our own (`serve_static/`: HTML, a
script, CSS; nothing fetched from the network) rather than Gradio, the usual library of
model demos: the `web` extra is a small fraction of what Gradio adds to a fresh environment
(pandas, fastapi, huggingface_hub, ...; benchmarks/web_install_size.sh,
experiments/results/web_install_size.txt), and a page of our own is what a browser test can drive
element by element. One worker runs the models, loaded once; requests queue for it. Files go to a
temporary folder removed when the server stops; uploads above --max-upload-mb and images above
--max-pixels are refused with a message on the page.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys

from cqrnet_jax.apps.common import (
    UsageError,
    add_color_model_argument,
    add_model_argument,
    add_ranker_argument,
    int_in_range,
)
from cqrnet_jax.apps.deblock import DEFAULT_TILE

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 50
# Half of deblock's: tiles bound the model's memory, not the whole-image colour planes around it
DEFAULT_MAX_PIXELS = 50_000_000
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help="a local web page: drop JPEGs in, compare before/after, download the results",
        description="Serves a page at http://HOST:PORT/ where you drop images to restore them "
        "as `deblock` does, compare before and after, and download the results (PNG, or all as "
        "a zip). Needs the web extra: pip install -c requirements/constraints.txt -e '.[web]'. "
        "The page has no login: keep the default host (this machine only) unless you trust "
        "your network. Ctrl-C stops the server and deletes its temporary files.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int_in_range(1, 65535),
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT})",
    )
    add_model_argument(p)
    add_color_model_argument(p)
    add_ranker_argument(p)
    p.add_argument(
        "--tile",
        type=int_in_range(0),
        default=DEFAULT_TILE,
        help=f"tile size in pixels, as for deblock (default {DEFAULT_TILE}; 0 = whole images)",
    )
    p.add_argument(
        "--skip-above",
        type=int_in_range(1, 100),
        metavar="QF",
        help="leave JPEGs above this quality alone unless 'restore anyway' is ticked (default: "
        "the highest quality the model is known to improve, 90 for the shipped one)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=int_in_range(1),
        metavar="MB",
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"refuse larger uploads (default {DEFAULT_MAX_UPLOAD_MB})",
    )
    p.add_argument(
        "--max-pixels",
        type=int_in_range(1),
        metavar="N",
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images of more pixels (default {DEFAULT_MAX_PIXELS})",
    )
    p.add_argument(
        "--parallel",
        type=int_in_range(1),
        metavar="N",
        help="the devices a big photo's tiles go to, as for deblock (default: min(cores, 4))",
    )
    return p


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) (port 0: any free one); a one-line error if it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        raise UsageError(
            f"cannot listen on {host}:{port}: {err.strerror or err} (try another --port)"
        ) from None
    return sock


def run_serve(args) -> int:
    """Runs the server until Ctrl-C; returns the exit status."""
    from cqrnet_jax.devices import MAX_HOST_DEVICES, inference_devices, split_host_cores

    split_host_cores(args.parallel or MAX_HOST_DEVICES)  # before JAX starts, as deblock
    try:
        import uvicorn

        from cqrnet_jax.apps.serve_app import build_app
    except ImportError as err:
        raise UsageError(
            f"serve needs the web extra ({err.name} is not installed): "
            "pip install -c requirements/constraints.txt -e '.[web]'"
        ) from None
    import tempfile
    from pathlib import Path

    from cqrnet_jax.apps.deblock import check_tile
    from cqrnet_jax.apps.estimate import _load_scorer
    from cqrnet_jax.apps.input_quality import restore_limit, trained_qualities
    from cqrnet_jax.apps.serve_jobs import JobQueue
    from cqrnet_jax.inference import load_color_restorer, load_restorer

    sock = listening_socket(args.host, args.port)
    devices = inference_devices(args.parallel)
    restorer, meta = load_restorer(args.model, tile=args.tile, devices=devices)
    colour = load_color_restorer(args.color_model, args.model, tile=args.tile, devices=devices)
    check_tile(args, restorer)
    scorer = _load_scorer(args.ranker)  # a missing ranker is an InputError, caught by the CLI
    limit = args.skip_above if args.skip_above is not None else restore_limit(meta)
    local = args.host in LOCAL_HOSTS
    hosts = ["127.0.0.1", "localhost", "[::1]", "::1"] if local else ["*"]
    with tempfile.TemporaryDirectory(prefix="cqrnet-serve-") as root:
        jobs = JobQueue(
            restorer,
            scorer,
            Path(root),
            limit=limit,
            trained=trained_qualities(meta),
            max_pixels=args.max_pixels,
            colour=colour,
        )
        app = build_app(jobs, max_upload_bytes=args.max_upload_mb * 10**6, allowed_hosts=hosts)
        port = sock.getsockname()[1]
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"serve: http://{shown}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
        if not local:
            print(
                f"warning: listening on {args.host}: anyone who reaches it can use the page",
                file=sys.stderr,
            )
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        # uvicorn shuts down on SIGINT / SIGTERM, then raises the signal again: as
        # KeyboardInterrupt for both, so the temporary folder is removed on the way out
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
    print("serve: stopped", file=sys.stderr)
    return 0
