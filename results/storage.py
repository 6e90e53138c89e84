"""Where a run folder lives: a local folder, or a prefix in object storage worked on through a
local mirror.

`--storage` takes a folder or a URI that pyarrow.fs resolves: s3://bucket/prefix (the endpoint
from AWS_ENDPOINT_URL, the credentials from AWS's standard chain: pyarrow's AWS SDK reads both),
gs://bucket/prefix (Google's application default credentials; an emulator's endpoint from
CLOUD_STORAGE_EMULATOR_ENDPOINT: pyarrow's Google Cloud client reads both), file:///path. Every
node that touches a run at a URI works on its own mirror of it,
SCRATCH/<scheme>/<bucket>/<prefix>/<name> (SCRATCH: $CVAE_SCRATCH, else $CVAE_CACHE/scratch):
whoever writes a file there pushes it (uploads each file changed since its last push), whoever
needs a file another node wrote pulls it (downloads what is newer in the bucket). A command that
only reads a run (results.show, results.sample, load_study) works on a mirror of its own,
SCRATCH/readers/<scheme>/..., which no trial or driver writes in. Object storage
has no appends and no renames: a pushed file is uploaded whole, and a reader sees its old object
or its new one, never half of one.

Why not Tune's own upload for a trial's files (SyncConfig(sync_artifacts=True))? It uploads a
trial's working folder but never downloads it on a restore, so a trial resumed on another node
would find neither its checkpoint nor its records (its scores are read back from them). Tune's
checkpoints (tune.report(checkpoint=...)) upload in the trial's own thread, and cover trials, not
the final stage's Ray tasks nor the driver's files. Tune's own experiment state does go through
Tune (its storage_path).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cvae_core.atomic import is_temp, temp_name
from cvae_core.cli import file_in_the_way, first_line, not_a_folder
from cvae_core.sources import default_cache_dir

log = logging.getLogger("results")


class StorageError(ValueError):
    """A storage URI that cannot be used; the message names it, in one line."""


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def scratch_root() -> Path:
    """This node's folder of run mirrors."""
    return Path(os.environ.get("CVAE_SCRATCH") or default_cache_dir() / "scratch")


# The variable each scheme's client takes its endpoint from (a local server, MinIO, an emulator).
_ENDPOINT_VARIABLES = {"s3": "AWS_ENDPOINT_URL", "gs": "CLOUD_STORAGE_EMULATOR_ENDPOINT"}


def _endpoint(uri: str) -> str | None:
    return os.environ.get(_ENDPOINT_VARIABLES.get(urlsplit(uri).scheme, ""))


def _filesystem(uri: str):
    """pyarrow's filesystem and path for `uri`, built once per process and endpoint (an S3 client
    costs). Kept out of Remote, which travels to every trial: each process builds its own, from its
    own environment (the endpoint; the credentials, which pyarrow reads as it connects)."""
    return _resolved(uri, _endpoint(uri))


@functools.lru_cache(maxsize=None)
def _resolved(uri: str, _endpoint: str | None):
    from pyarrow.fs import FileSystem

    # S3: a file smaller than a part goes up in one PUT, not the three requests of a multipart
    # upload (create, part, complete); a missing bucket then shows only when the file is closed,
    # which check_uri has ruled out before anything is written.
    return FileSystem.from_uri(f"{uri}?allow_delayed_open=true" if urlsplit(uri).scheme == "s3" else uri)


# A mirrored file's (size, mtime_ns) here and its object's (size, mtime) in the bucket when it was
# last pushed or pulled: a file unchanged here is not pushed again, an object unchanged there is not
# pulled again.
_synced: dict[str, tuple[tuple, tuple]] = {}
_lock = threading.Lock()  # one push or pull at a time in a process: a trial's background push and its own


@dataclass(frozen=True)
class Remote:
    """A run folder at a URI and this node's mirror of it."""

    uri: str  # scheme://bucket/prefix/name, without a trailing slash
    reader: bool = False  # the mirror of a command that only reads the run (its own: nothing else writes there)

    def __post_init__(self):
        object.__setattr__(self, "uri", self.uri.rstrip("/"))

    @property
    def filesystem(self):
        """The run's pyarrow filesystem, as this module builds it (also Tune's storage_filesystem)."""
        return _filesystem(self.uri)[0]

    @property
    def fs_path(self) -> str:
        """The run's path in its pyarrow filesystem: bucket/prefix/name."""
        return _filesystem(self.uri)[1].rstrip("/")

    @property
    def scratch(self) -> Path:
        """This node's mirror of the run."""
        parts = urlsplit(self.uri)
        root = scratch_root() / "readers" if self.reader else scratch_root()
        return root / parts.scheme / (parts.netloc + parts.path).strip("/")

    def _key(self, local: Path) -> str:
        """The object key of a path in the mirror."""
        rel = local.relative_to(self.scratch).as_posix()
        return self.fs_path if rel == "." else f"{self.fs_path}/{rel}"

    def listing(self, local: Path | None = None, recursive: bool = True, folders: bool = False) -> list:
        """What the bucket holds under `local` (a path in the mirror), as pyarrow FileInfos: its
        files, and with `folders` its folders too."""
        from pyarrow.fs import FileSelector, FileType

        selector = FileSelector(self._key(local or self.scratch), recursive=recursive, allow_not_found=True)
        infos = self.filesystem.get_file_info(selector)
        return [info for info in infos if folders or info.type == FileType.File]

    def pull(self, local: Path | None = None, recursive: bool = True, keep=lambda path: True) -> None:
        """Download the files under `local` that the mirror lacks or holds older (`keep(path)`: which)."""
        with _lock:
            for info in self.listing(local, recursive):
                path = self.scratch / info.path[len(self.fs_path) + 1:]
                if is_temp(path) or not keep(path) or not _newer_there(path, info):
                    continue
                self._download(info.path, path)
                _synced[str(path)] = (_stamp(path), _object_stamp(info))

    def _download(self, key: str, path: Path) -> None:
        """The object at `key` into `path`, whole (another process on this node may pull it too)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(temp_name(path.name))
        try:
            with self.filesystem.open_input_stream(key) as src, open(tmp, "wb") as dst:
                dst.write(src.read())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def fetch(self, local: Path, to: Path) -> bool:
        """The bucket's copy of the mirror's file `local` into `to`, leaving the mirror's own alone
        (a file another process here appends to); False when the bucket has none."""
        from pyarrow.fs import FileType

        if self.filesystem.get_file_info(self._key(local)).type != FileType.File:
            return False
        self._download(self._key(local), to)
        return True

    def push(self, local: Path | None = None, recursive: bool = True) -> None:
        """Upload the files under `local` (a folder or a file of the mirror) changed since their
        last push. The weights (*.pt) are opened first and uploaded last: the checkpoint a bucket
        holds is never newer than the records read with it (a file appended to before the weights
        are saved), whether the training goes on meanwhile or the push is cut short."""
        local = local or self.scratch
        if local.is_file():
            files = [local]
        elif local.is_dir():
            files = [p for p in (local.rglob("*") if recursive else local.iterdir()) if not is_temp(p)]
        else:
            return
        with _lock, contextlib.ExitStack() as opened:
            weights = [(p, opened.enter_context(f)) for p in files if p.suffix == ".pt" and (f := _open(p))]
            for path in files:
                if path.suffix != ".pt" and (f := _open(path)):
                    with f:
                        self._upload(path, f)
            for path, f in weights:
                self._upload(path, f)

    def _upload(self, path: Path, src) -> None:
        """One file from its open version (os.replace leaves an open version whole), unless
        unchanged since its last push."""
        from pyarrow.fs import LocalFileSystem

        st = os.fstat(src.fileno())
        stamp = (st.st_size, st.st_mtime_ns)
        if _synced.get(str(path), (None,))[0] == stamp:
            return
        key = self._key(path)
        # An object store replaces an object whole; a file system (file://) writes in place, so a
        # kill mid-upload would leave the run's file cut short and the newest of all: there it is
        # written beside its place and moved in.
        folders = isinstance(self.filesystem, LocalFileSystem)
        target = f"{key.rsplit('/', 1)[0]}/{temp_name(path.name)}" if folders else key
        if folders:
            self.filesystem.create_dir(key.rsplit("/", 1)[0], recursive=True)
        try:
            with self.filesystem.open_output_stream(target) as dst:
                dst.write(src.read())
            if folders:
                self.filesystem.move(target, key)
        except BaseException:
            if folders:
                with contextlib.suppress(OSError):
                    self.filesystem.delete_file(target)
            raise
        _synced[str(path)] = (stamp, _object_stamp(self.filesystem.get_file_info(key)))

    def remove(self, local: Path) -> None:
        """Delete a file from the bucket (its mirror's copy is the caller's)."""
        from pyarrow.fs import FileType

        if self.filesystem.get_file_info(self._key(local)).type == FileType.File:
            self.filesystem.delete_file(self._key(local))

    def delete(self, last: tuple[Path, ...] = ()) -> None:
        """Delete the run from the bucket, the files `last` (paths in the mirror) after the rest, in
        their order."""
        from pyarrow.fs import FileType

        keys = [self._key(path) for path in last]
        for info in self.listing(recursive=False, folders=True):
            if info.type == FileType.Directory:
                self.filesystem.delete_dir(info.path)
            elif info.path not in keys:
                self.filesystem.delete_file(info.path)
        for key in keys:
            if self.filesystem.get_file_info(key).type == FileType.File:
                self.filesystem.delete_file(key)
        self.filesystem.delete_dir_contents(self.fs_path, missing_dir_ok=True)


def _open(path: Path):
    """The file open for reading; None for one gone since it was listed, or a folder."""
    try:
        return open(path, "rb")
    except (FileNotFoundError, IsADirectoryError):
        return None


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _object_stamp(info) -> tuple:
    return info.size, info.mtime


def _newer_there(path: Path, info) -> bool:
    """Whether the object `info` holds what the mirror's file lacks: the file is missing, or the
    object changed since this process last synced it while the file did not; when both changed
    (or the file was never synced here), whichever is younger."""
    if not path.exists():
        return True
    here, there = _synced.get(str(path), (None, None))
    if there == _object_stamp(info):
        return False
    if here == _stamp(path):
        return True
    return info.mtime.timestamp() > path.stat().st_mtime


class Uploads:
    """Pushes in a background thread, so that training goes on while its files upload. A push
    asked for while one waits to start is that one."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cvae-push")
        self._queued: Future | None = None

    def later(self, push) -> None:
        if self._queued is None or self._queued.running() or self._queued.done():
            self._queued = self._pool.submit(push)

    def wait(self) -> None:
        """Wait for the pushes asked for; raise the error of a failed one (once)."""
        self._pool.submit(lambda: None).result()
        queued, self._queued = self._queued, None
        if queued is not None and queued.done():
            queued.result()

    def finish(self, push) -> None:
        """Wait for the pushes asked for, then `push`, which uploads whatever a failed one missed
        (a push uploads every file changed since its last upload): a failed one is only logged."""
        try:
            self.wait()
        except Exception as e:
            log.warning(f"a background upload failed ({first_line(e)}); uploading again")
        push()


# How a user gives each scheme's client credentials.
_CREDENTIALS = {"s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
                "gs": "GOOGLE_APPLICATION_CREDENTIALS, or gcloud auth application-default login"}

# pyarrow's error, by the AWS SDK's error name, the HTTP status or Google's client's message in it,
# in the user's words (an S3 bucket is checked with HEAD, whose answer has no body to say more).
_PROBLEMS = {
    "Could not create a OAuth2 access token": "no credentials found: set {credentials}",  # whatever follows it
    "NETWORK_CONNECTION": "the endpoint does not answer ({endpoint})",
    "Could not connect to server": "the endpoint does not answer ({endpoint})",
    "HTTP status 403": "access denied: check the credentials ({credentials})",
    "ACCESS_DENIED": "access denied: check the credentials ({credentials})",
    "PERMISSION_DENIED": "access denied: check the credentials ({credentials})",
}

# gs://: how long the check retries an endpoint that does not answer (Google's client retries for
# minutes, which a run's own requests keep).
CHECK_RETRY_S = 5

# Where AWS's standard chain finds credentials on a node, short of an instance's metadata service
# (which only a request could ask): pyarrow does not say whether its chain found any.
_AWS_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                             "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def _aws_credentials_set() -> bool:
    files = (os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials",
             os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config")
    return any(os.environ.get(v) for v in _AWS_CREDENTIAL_VARIABLES) or any(Path(f).expanduser().is_file()
                                                                            for f in files)


def _shown(uri: str) -> str:
    """The URI as an error line may show it: without anything before an @ (credentials)."""
    parts = urlsplit(uri)
    return parts._replace(netloc=parts.hostname or "").geturl() if parts.username or parts.password else uri


def check_uri(uri: str, flag: str) -> None:
    """Raise StorageError (one line naming `flag`) for a URI a run cannot live at: an unknown
    scheme, credentials or options in it, a bucket that does not exist, an endpoint that does not
    answer, credentials it refuses. Writes nothing."""
    from pyarrow import ArrowException
    from pyarrow.fs import FileType, LocalFileSystem

    parts = urlsplit(uri)
    if parts.username or parts.password:
        raise StorageError(f"{flag} {_shown(uri)}: holds credentials; give them in the environment "
                           "(AWS_ACCESS_KEY_ID, AWS_PROFILE, ...), never in the URI")
    if parts.query:
        raise StorageError(f"{flag} {uri}: takes no options (?{parts.query}); set them in the environment "
                           "(AWS_ENDPOINT_URL, AWS_REGION, ...)")
    if parts.fragment or uri.endswith("#"):
        raise StorageError(f"{flag} {uri}: '#' would end its path there; name the folder without it")
    if ".." in parts.path.split("/"):
        # the run's mirror on this node is SCRATCH/<scheme>/<bucket>/<path>: '..' would put it,
        # and what clears it, outside SCRATCH
        raise StorageError(f"{flag} {uri}: '..' is not a folder in a bucket; give the path without it")
    try:
        fs, path = _filesystem(uri)
    except Exception as e:  # pyarrow.ArrowInvalid (a ValueError) or OSError, by scheme
        problem = f"unknown scheme {parts.scheme}://" if "Unrecognized filesystem" in str(e) else first_line(e)
        raise StorageError(f"{flag} {uri}: {problem} (give a folder, or a URI such as s3://bucket/prefix, "
                           "gs://bucket/prefix, file:///path)") from None
    if isinstance(fs, LocalFileSystem):
        if (file := file_in_the_way(Path(path))) is not None:
            raise StorageError(f"{flag} {uri}: {file} {not_a_folder(file)}")
        return
    bucket = path.split("/")[0]
    if not bucket:
        raise StorageError(f"{flag} {uri}: names no bucket (s3://bucket/prefix)")
    if parts.scheme == "gs":
        fs = _resolved(f"{uri}?retry_limit_seconds={CHECK_RETRY_S}", _endpoint(uri))[0]
    try:
        found = fs.get_file_info(bucket).type != FileType.NotFound
    except (OSError, ArrowException) as e:
        problem = _problem(e, uri)
        if parts.scheme == "s3" and "NETWORK_CONNECTION" not in str(e) and not _aws_credentials_set():
            problem = f"no credentials found: set {_CREDENTIALS['s3']} (the endpoint answered: {problem})"
        raise StorageError(f"{flag} {uri}: {problem}") from None
    if not found:
        raise StorageError(f"{flag} {uri}: the bucket {bucket} does not exist (at "
                           f"{_endpoint(uri) or 'the default endpoint'})")


def _problem(e: Exception, uri: str) -> str:
    words = {"endpoint": _endpoint(uri) or "the default endpoint",
             "credentials": _CREDENTIALS.get(urlsplit(uri).scheme, "the credentials")}
    return next((problem.format(**words) for name, problem in _PROBLEMS.items() if name in str(e)), first_line(e))
