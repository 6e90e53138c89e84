"""A real S3 endpoint for tests: moto's standalone server on 127.0.0.1, as Ray's own tests use
it, and a bucket of one test's own, made and read through the S3 API."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

# Credentials of no one, distinctive enough to be searched for in everything a run writes.
ACCESS_KEY = "AKIACVAETESTKEY00001"
SECRET_KEY = "cvae-test-secret-4f1d9a7c2b"


@dataclass
class Bucket:
    name: str
    env: dict[str, str]  # what a command given this bucket runs with

    @property
    def uri(self) -> str:
        return f"s3://{self.name}"

    def _fs(self):
        from pyarrow.fs import S3FileSystem

        return S3FileSystem(endpoint_override=self.env["AWS_ENDPOINT_URL"], access_key=ACCESS_KEY,
                            secret_key=SECRET_KEY, region="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        """Every object's key under `prefix`, relative to it."""
        from pyarrow.fs import FileSelector, FileType

        base = f"{self.name}/{prefix}".rstrip("/")
        infos = self._fs().get_file_info(FileSelector(base, recursive=True, allow_not_found=True))
        return sorted(i.path[len(base) + 1:] for i in infos if i.type == FileType.File)

    def read(self, key: str) -> bytes:
        with self._fs().open_input_stream(f"{self.name}/{key}") as f:
            return f.read()

    def write(self, key: str, data: bytes) -> None:
        with self._fs().open_output_stream(f"{self.name}/{key}") as f:
            f.write(data)


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, tmp_path, monkeypatch) -> Bucket:
    """A new bucket, and the environment that points this process and its commands at it, with
    this test's own scratch folder."""
    from pyarrow.fs import S3FileSystem

    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "CVAE_SCRATCH": str(tmp_path / "scratch")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    name = f"cvae-{uuid.uuid4().hex[:12]}"
    S3FileSystem(endpoint_override=s3_endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1",
                 allow_bucket_creation=True).create_dir(name)
    return Bucket(name, env)


def files_holding(folder: Path, text: str) -> list[Path]:
    """The files under `folder` whose bytes hold `text`."""
    return [p for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]
