"""Real servers on free ports of 127.0.0.1, for tests and benchmarks: an MLflow tracking
server (SQLite, or the team set-up of the README: PostgreSQL + artifacts in S3), a
throwaway PostgreSQL cluster from Debian's binaries, and moto's standalone S3 server.

Each runs in a process group of its own, so stopping it stops the workers it started and
nothing else. The context managers stop their server on exit and remove what it wrote.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = [
    "POSTGRES_GLOB",
    "S3_CREDENTIALS",
    "free_port",
    "mlflow_server",
    "moto_server",
    "postgres",
    "postgres_bin",
    "s3_client",
    "start_process",
    "start_server",
    "stop_server",
    "wait_for",
]

#: What moto accepts as credentials (any non-empty pair; these are its documented dummies).
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
#: Debian installs each PostgreSQL major version's server binaries here (`make postgres`).
POSTGRES_GLOB = "/usr/lib/postgresql/*/bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, log: Path, seconds: float = 300) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it dies or times out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer in {seconds}s:\n{log.read_text()[-3000:]}")


def start_process(
    command: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """`command` in a process group of its own (stopped by stop_server), output to `log`."""
    with log.open("w") as stream:
        return subprocess.Popen(
            command,
            cwd=cwd,
            stdout=stream,
            stderr=subprocess.STDOUT,
            env=os.environ.copy() if env is None else env,
            start_new_session=True,
        )


def start_server(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m mlflow ARGS` in a process group of its own (stopped by stop_server)."""
    return start_process([sys.executable, "-m", "mlflow", *args], log, env)


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server and the workers it started (its own process group, nothing else)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def mlflow_server(
    backend: str, artifacts: str, log: Path, env: dict[str, str] | None = None, seconds: float = 300
) -> Iterator[str]:
    """`mlflow server` on a free port with this backend store and artifact destination;
    yields its URL (all a client needs in MLFLOW_TRACKING_URI). `env`: the server's own
    environment (e.g. its S3 credentials), instead of this process's."""
    port = free_port()
    command = ["server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = start_server([*command, "--backend-store-uri", backend, "--artifacts-destination", artifacts], log, env)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server, log, seconds)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(server)


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL bin folder with initdb and pg_ctl, or None."""
    folders = sorted(Path("/").glob(POSTGRES_GLOB.lstrip("/")), key=lambda folder: int(folder.parent.name))
    found = [folder for folder in folders if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file()]
    return found[-1] if found else None


@contextmanager
def postgres(database: str = "mlflow") -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (a free port, trust authentication, no
    Unix socket) holding an empty `database`; yields its URL. PostgreSQL refuses to run as
    root, so as root it runs as the `postgres` user Debian's package creates, in a data
    folder that user owns (under the system's temp folder: pytest's are root-only)."""
    binaries = postgres_bin()
    if binaries is None:
        raise FileNotFoundError(f"no PostgreSQL server binaries in {POSTGRES_GLOB}: run `make postgres`")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="segflow-postgres-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")  # KeyError: no such user
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chown(folder, account.pw_uid, account.pw_gid)
    data, log, port = folder / "data", folder / "server.log", free_port()
    try:

        def run(*command: str | Path) -> None:
            result = subprocess.run([*as_user, *map(str, command)], capture_output=True, text=True)
            if result.returncode != 0:
                tail = log.read_text()[-3000:] if log.is_file() else ""
                raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stdout}{result.stderr}{tail}")

        # --no-sync and fsync off: a test database need not survive a power cut.
        run(binaries / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\nfsync = off\n")
        run(binaries / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "120", "start")
        try:
            run(binaries / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
            yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
        finally:
            run(binaries / "pg_ctl", "-D", data, "-w", "-m", "fast", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """moto's standalone server (S3 and the rest of AWS, in memory) on a free port; yields
    its endpoint URL."""
    port = free_port()
    server = start_process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)
    try:
        wait_for(f"http://127.0.0.1:{port}/moto-api/data.json", server, log, seconds=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(server)


def s3_client(endpoint: str):
    """A boto3 S3 client of the moto server at `endpoint`."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
