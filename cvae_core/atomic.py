"""Writes a kill cannot leave half done.

Whole files: a temp file in the target's folder, then os.replace; a reader (or a resumed run
after a kill) sees the old file or the new one, never half of one. The temp file is created with
mode 0o666 minus the umask, as a plain write would be, so colleagues sharing a run folder can
read what was written (mkstemp would give 0o600).

Records (epochs, scores, ASHA's rungs): JSON lines appended, read back without a line that a
kill cut short.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterable


def temp_name(name: str) -> str:
    """A temp file's name for writing `name` beside it: hidden, unique, ending .tmp (so that a
    mirror's push leaves it out, results.storage)."""
    return f".{name}.{secrets.token_hex(6)}.tmp"


def is_temp(path: Path | str) -> bool:
    """A file being written (temp_name): a mirror never pushes or pulls one (results.storage)."""
    path = Path(path)
    return path.name.startswith(".") and path.name.endswith(".tmp")


def remove_temp_files(folder: Path) -> None:
    """The files a killed attempt was writing under `folder` (a checkpoint's worth of disk each),
    removed before the next attempt writes there: no other process writes in it then."""
    for path in folder.rglob(".*.tmp"):
        path.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), then move tmp_path onto `path`."""
    atomic_write_all([(path, write)])


def atomic_write_all(writes: list[tuple[str | os.PathLike, Callable[[str], None]]]) -> None:
    """atomic_write for several files: each (path, write) written to its temp file first, then all
    moved into place in the order given, one right after another, so that a kill leaves each file
    old or new and a later one new only if every one before it is."""
    temps = []
    try:
        for path, write in writes:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / temp_name(path.name)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
            temps.append((tmp, path))
            write(str(tmp))
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def image_format(path: str | os.PathLike) -> str | None:
    """The format Pillow writes a file named `path` in, by its suffix; None where it writes none."""
    from PIL import Image

    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    return fmt if fmt in Image.SAVE else None


def atomic_save_image(image, path: str | os.PathLike) -> None:
    """A PIL image, in the format its path's suffix names (the temp file's would name none): a kill
    leaves the old image or the new, never one cut short that a reader fails to open."""
    fmt = image_format(path)
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def append_records(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Append JSON lines in one write. A line a kill cut short is ended first, so it cannot
    swallow the new records."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    with open(path, "a+b") as f:
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
        f.write(text.encode())


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of an append-only JSON-lines file (none if it is missing), without a line a
    kill cut short: its record is made again by whoever resumes."""
    records = []
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def keep_records(path: str | os.PathLike, keep: Callable[[dict], bool]) -> None:
    """Rewrite a JSON-lines file with only the records `keep` accepts, at once (a kill leaves the
    old file or the new); left untouched when it accepts them all."""
    records = read_records(path)
    if not all(map(keep, records)):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records if keep(r)))
