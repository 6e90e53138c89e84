"""Real object-storage endpoints for tests, each on 127.0.0.1 for the test session, and a bucket
of one test's own, made and read through the store's API: S3 (moto's standalone server, as Ray's
own tests use it) and Google Cloud Storage (gcp-storage-emulator, which google-cloud-cpp, the
client inside pyarrow, reaches through CLOUD_STORAGE_EMULATOR_ENDPOINT)."""

from __future__ import annotations

import json
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
    scheme: str = "s3"
    secrets: tuple[str, ...] = (ACCESS_KEY, SECRET_KEY)  # what nothing a run writes may hold

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.name}"

    def _fs(self):
        from pyarrow.fs import S3FileSystem

        if self.scheme == "gs":
            return _gcs(self.env["CLOUD_STORAGE_EMULATOR_ENDPOINT"])
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


def _gcs(endpoint: str):
    """The emulator, as the tests' own client (it checks no credentials; making a bucket needs a project)."""
    from pyarrow.fs import GcsFileSystem

    return GcsFileSystem(anonymous=True, endpoint_override=endpoint.removeprefix("http://"), scheme="http",
                         project_id="cvae-test")


@pytest.fixture(scope="session")
def gcs_endpoint():
    from cli import free_port
    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)  # a line per request otherwise
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def gcs_key(tmp_path_factory) -> tuple[Path, str]:
    """A service account's key file of no one, and the key's distinctive line: Google's client signs
    its own tokens with it (no token server to ask), and the emulator checks none."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path = tmp_path_factory.mktemp("gcs-key") / "service-account.json"
    path.write_text(json.dumps({"type": "service_account", "project_id": "cvae-test", "private_key_id": "0",
                                "private_key": pem, "client_email": "cvae-test@cvae-test.iam.gserviceaccount.com",
                                "client_id": "0", "token_uri": "http://127.0.0.1:1/token"}))
    line = pem.splitlines()[5]
    assert len(base64.b64decode(line)) == 48  # a whole line of the key, not a header
    return path, line


@pytest.fixture
def gcs_bucket(gcs_endpoint, gcs_key, tmp_path, monkeypatch) -> Bucket:
    """A new bucket in the GCS emulator, and the environment that points this process and its
    commands at it, with this test's own scratch folder."""
    env = {"CLOUD_STORAGE_EMULATOR_ENDPOINT": gcs_endpoint, "GOOGLE_APPLICATION_CREDENTIALS": str(gcs_key[0]),
           "CVAE_SCRATCH": str(tmp_path / "scratch")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    name = f"cvae-{uuid.uuid4().hex[:12]}"
    _gcs(gcs_endpoint).create_dir(name)
    return Bucket(name, env, scheme="gs", secrets=(gcs_key[1],))


def files_holding(folder: Path, text: str) -> list[Path]:
    """The files under `folder` whose bytes hold `text`."""
    return [p for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]
