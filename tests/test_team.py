"""The team set-up of the README, with real servers on 127.0.0.1 (tests/servers.py): an
MLflow tracking server on PostgreSQL with its artifacts in S3 (moto's server), and a DVC
remote in the same bucket. Clients get only MLFLOW_TRACKING_URI, and DVC its credentials
from `dvc remote modify --local`; nothing inside segflow is mocked."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import numpy as np
import psutil
import pytest
import yaml
from helpers import REPO_ROOT, TEAM_BUCKET, run_checked, shrunk_clone
from PIL import Image
from servers import S3_CREDENTIALS, free_port, s3_client, start_process, start_server, stop_server, wait_for

MODEL = "segflow-unet"  # params.yaml's mlflow.model_name


def bucket_keys(endpoint: str, prefix: str) -> list[str]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=TEAM_BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def query(url: str, sql: str, *args: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute(sql, args).fetchall()


def test_postgres_and_the_s3_server_answer(postgres_url, s3_endpoint):
    """The two servers the tracking server stands on: a throwaway cluster and moto's S3."""
    import psycopg

    with psycopg.connect(postgres_url) as connection:
        connection.execute("CREATE TABLE probe (name text, value double precision)")
        connection.execute("INSERT INTO probe VALUES (%s, %s), (%s, %s)", ("a", 0.5, "b", 1.5))
        assert connection.execute("SELECT name, value FROM probe ORDER BY name").fetchall() == [("a", 0.5), ("b", 1.5)]
        connection.rollback()  # leave the database empty for the tracking server
    s3 = s3_client(s3_endpoint)
    s3.put_object(Bucket=TEAM_BUCKET, Key="probe/a.txt", Body=b"hello")
    assert s3.get_object(Bucket=TEAM_BUCKET, Key="probe/a.txt")["Body"].read() == b"hello"
    s3.delete_object(Bucket=TEAM_BUCKET, Key="probe/a.txt")
    assert TEAM_BUCKET in [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]


@pytest.mark.slow
def test_metrics_go_to_postgres_and_artifacts_to_the_bucket(team_servers, tmp_path):
    client = mlflow.MlflowClient(tracking_uri=team_servers.url, registry_uri=team_servers.url)
    experiment = client.create_experiment("round-trip")
    # The server proxies artifacts: a client needs no S3 credentials or endpoint.
    assert client.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:/")
    run = client.create_run(experiment).info.run_id
    for step, loss in enumerate([0.9, 0.5, 0.25], start=1):
        client.log_metric(run, "train_loss", loss, step=step)
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run, str(tmp_path / "note.txt"))
    client.set_terminated(run)
    assert [(m.step, m.value) for m in client.get_metric_history(run, "train_loss")] == [(1, 0.9), (2, 0.5), (3, 0.25)]
    rows = query(team_servers.postgres, "SELECT step, value FROM metrics WHERE run_uuid = %s ORDER BY step", run)
    assert rows == [(1, 0.9), (2, 0.5), (3, 0.25)]
    prefix = f"mlflow/{experiment}/{run}/"
    assert bucket_keys(team_servers.s3, prefix) == [f"{prefix}artifacts/note.txt"]


def _serve(root: Path, env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """`segflow serve` on a free port in `root` (models:/segflow-unet@champion); waits for it."""
    port = free_port()
    command = [sys.executable, "-c", "from segflow.cli import main; main()", "serve", "--port", str(port)]
    server = start_process(command, log, env, cwd=root)
    wait_for(f"http://127.0.0.1:{port}/health", server, log)
    return server, f"http://127.0.0.1:{port}"


@pytest.mark.slow(seconds=130)
def test_repro_promote_serve_push_and_pull_against_the_team_servers(team_servers, tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    env = {k: v for k, v in shrunk_clone(root).items() if not k.startswith("AWS_")}
    env["MLFLOW_TRACKING_URI"] = team_servers.url  # all a client is told
    run_checked(["dvc", "pull", "--allow-missing", "-q"], root, env)  # data/ from the sample remote
    # The first version: trained by the pipeline, registered on the server, @champion.
    run_checked(["dvc", "repro"], root, env)
    first = json.loads((root / "artifacts/train/run.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=team_servers.url, registry_uri=team_servers.url)
    assert client.get_model_version(MODEL, "1").run_id == first["run_id"]
    assert client.get_run(first["run_id"]).data.params["preprocess.image_size"] == "64"
    assert not (root / "mlflow.db").exists() and not (root / "mlartifacts").exists()
    # ...in PostgreSQL, with the model, the model card and the evaluation in the bucket.
    rows = query(team_servers.postgres, "SELECT name, version, run_id FROM model_versions")
    assert rows == [(MODEL, 1, first["run_id"])]
    keys = bucket_keys(team_servers.s3, "mlflow/")
    for name in ("MLmodel", "model_card.md", "evaluation/metrics.json", "history.csv", "dataset/plan.json"):
        assert any(key.endswith(f"/{name}") for key in keys), f"no {name} in the bucket: {keys}"

    # A second version, then promote, as a teammate would (forced: a 1-epoch model need not win).
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["lr"] *= 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_checked(["dvc", "repro"], root, env)
    assert json.loads((root / "artifacts/train/run.json").read_text())["model_version"] == "2"
    out = run_checked(["segflow", "promote", "--force"], root, env)
    assert "@champion 1 -> 2" in out, out
    assert client.get_model_version(MODEL, "2").tags["promote.outcome"] in ("promoted", "forced")
    aliases = query(team_servers.postgres, "SELECT alias, version FROM registered_model_aliases ORDER BY alias")
    assert aliases == [("candidate", 2), ("champion", 2)]
    assert any("/promotions/" in key for key in bucket_keys(team_servers.s3, "mlflow/"))
    # The ONNX export of @champion, verified on the test split, lands in the bucket too.
    run_checked(["segflow", "export", "--exporter", "torchscript"], root, env)  # seconds, not minutes
    assert client.get_model_version(MODEL, "2").tags["onnx.fp32"].startswith("runs:/")
    onnx_keys = [key for key in bucket_keys(team_servers.s3, "mlflow/") if "/onnx/v2/" in key]
    assert any(key.endswith(".onnx") for key in onnx_keys), onnx_keys

    # Served from the registry on the server; after a rollback, /reload serves version 1.
    log = tmp_path / "serve.log"
    server, url = _serve(root, env, log)
    try:
        photo = root / "data/scene_000.jpg"
        width, height = Image.open(photo).size
        answer = httpx.post(f"{url}/predict", content=photo.read_bytes(), headers={"content-type": "image/jpeg"})
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == "2"
        mask = np.array(Image.open(io.BytesIO(answer.content)))
        assert mask.shape == (height, width) and mask.max() < len(params["classes"]["names"])
        assert "@champion 2 -> 1" in run_checked(["segflow", "rollback"], root, env)
        reloaded = httpx.post(f"{url}/reload", timeout=120).json()
        assert reloaded["reloaded"] is True and reloaded["model"]["version"] == "1"
    finally:
        stop_server(server)

    # DVC: data and stage outputs pushed to the bucket; the credentials stay out of git.
    credentials = {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY"}

    def use_team_remote(repo: Path) -> None:
        for option, variable in credentials.items():
            run_checked(["dvc", "remote", "modify", "--local", "team", option, S3_CREDENTIALS[variable]], repo, env)

    run_checked(["dvc", "remote", "add", "-d", "team", f"s3://{TEAM_BUCKET}/dvc"], root, env)
    run_checked(["dvc", "remote", "modify", "team", "endpointurl", team_servers.s3], root, env)
    use_team_remote(root)
    run_checked(["dvc", "push"], root, env)
    assert len(bucket_keys(team_servers.s3, "dvc/files/md5/")) > 100  # the images, masks, arrays, model
    run_checked(["git", "add", "-A"], root, env)
    run_checked(["git", "commit", "-qm", "team remote, lr x2"], root, env)
    assert "testing" not in (root / ".dvc/config").read_text()
    assert ".dvc/config.local" not in run_checked(["git", "ls-files", ".dvc"], root, env)

    # A fresh clone pulls them back from the bucket: nothing to rerun.
    fresh = tmp_path / "fresh"
    run_checked(["git", "clone", "-q", str(root), str(fresh)], tmp_path, env)
    use_team_remote(fresh)
    run_checked(["dvc", "pull"], fresh, env)
    assert json.loads(run_checked(["dvc", "status", "--json"], fresh, env)) == {}
    for output in ("artifacts/train/model.pt", "data/scene_000.jpg", "artifacts/preprocess/plan.json"):
        assert (fresh / output).read_bytes() == (root / output).read_bytes(), output
    masks = sorted(path.name for path in (root / "artifacts/masks").iterdir())
    assert sorted(path.name for path in (fresh / "artifacts/masks").iterdir()) == masks


def readme_team_commands() -> tuple[list[str], list[str]]:
    """The README's PostgreSQL line and `mlflow server` command, word by word, as printed."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme[readme.index("## Team setup") :]
    block = block[block.index("```bash") + 7 : block.index("```", block.index("```bash") + 7)]
    lines = block.replace("\\\n", " ").splitlines()
    (psql,) = [line for line in lines if line.startswith("sudo -u postgres psql")]
    (server,) = [line for line in lines if line.startswith("mlflow server")]
    return shlex.split(psql), shlex.split(server)


def readme_server_settings() -> dict[str, str]:
    """The README's exports for the server that hold no placeholder (credentials, names)."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme[readme.index("## Team setup") :]
    exports = [line.split("#")[0].split()[1:] for line in block.splitlines() if line.startswith("export MLFLOW_SERVER")]
    return dict(word.split("=", 1) for words in exports for word in words)


@pytest.mark.slow
def test_the_readme_server_commands_run_as_written(s3_endpoint, tmp_path):
    """The role and database, then the server with --workers and --allowed-hosts: the name
    clients use gets answers, another name 403, and the server stays small."""
    from servers import postgres, postgres_bin

    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries not found (`make postgres` installs them)")
    psql, server_words = readme_team_commands()
    assert psql[:3] == ["sudo", "-u", "postgres"] and server_words[:2] == ["mlflow", "server"]
    assert "--workers" in server_words and "--allowed-hosts" in server_words
    with postgres("scratch") as superuser:
        port = superuser.rsplit(":", 1)[1].split("/")[0]
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        psql_here = [str(postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", port, *psql[4:]]
        run_checked([*as_postgres, *psql_here], tmp_path, dict(os.environ))
        web = free_port()
        words = " ".join(server_words[1:])  # `server ...`: run as python -m mlflow
        words = words.replace("0.0.0.0", "127.0.0.1").replace("--port 5000", f"--port {web}")
        words = words.replace("db.example.com:5432", f"127.0.0.1:{port}").replace("team-bucket", TEAM_BUCKET)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
        env.update(S3_CREDENTIALS, MLFLOW_S3_ENDPOINT_URL=s3_endpoint, **readme_server_settings())
        log = tmp_path / "server.log"
        server = start_server(shlex.split(words), log, env)
        try:
            wait_for(f"http://127.0.0.1:{web}/health", server, log)
            search = f"http://127.0.0.1:{web}/api/2.0/mlflow/experiments/search?max_results=5"
            named = httpx.get(search, headers={"Host": f"mlflow.example.com:{web}"})
            assert named.status_code == 200, named.text
            assert httpx.get(search, headers={"Host": f"evil.example.com:{web}"}).status_code == 403
            # A client as the README's (localhost is listed too): tables owned by the role.
            client = mlflow.MlflowClient(tracking_uri=f"http://localhost:{web}")
            run = client.create_run(client.create_experiment("readme")).info.run_id
            client.log_metric(run, "loss", 0.5)
            tables = query(
                superuser.rsplit("/", 1)[0] + "/mlflow", "SELECT tableowner FROM pg_tables WHERE tablename = 'metrics'"
            )
            assert tables == [("mlflow",)]
            processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
            resident = sum(p.memory_info().rss for p in processes)
            assert len(processes) <= 6 and resident < 1.5e9, (len(processes), resident)  # seen: 5, 0.8 GB
        finally:
            stop_server(server)
