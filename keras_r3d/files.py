"""Atomic writes: a crash leaves the old file or the new one, never half of one."""
import contextlib
import os
import pathlib
import shutil
import tempfile


@contextlib.contextmanager
def _atomically(path):
    """Yields a hidden sibling of `path` that keeps its suffix (matplotlib and
    Keras read the format from it) to write; renames it to `path` once written,
    and removes it where the writing fails."""
    path = pathlib.Path(path)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield partial
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        with contextlib.suppress(OSError):  # a read-only folder: the error above is the one to see
            partial.unlink(missing_ok=True)


def probe_writable(folder, name, make=True):
    """Makes `folder` (and its parents) and writes a temporary file in it,
    before the work whose results go there: a ValueError naming `name` (the
    flag and its value) where they could not be written. Without `make`, a
    folder not there yet is not made: its nearest existing parent must be a
    folder this process may write in."""
    folder = pathlib.Path(folder)
    try:
        existing = next(path for path in (folder, *folder.parents) if os.path.lexists(path))
        if existing.is_symlink() and not existing.exists():
            raise ValueError(f"{name}: cannot write there ({existing} is a link to nothing)")
        if not existing.is_dir():  # mkdir would say "File exists" or "Not a directory"
            raise ValueError(f"{name}: cannot write there ({existing} is a file, not a folder)")
        if not make and existing != folder:
            if not os.access(existing, os.W_OK | os.X_OK):  # no permission, a read-only disk
                raise ValueError(f"{name}: cannot write there (cannot make folders in {existing})")
            return
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:  # no permission, a read-only disk
        raise ValueError(f"{name}: cannot write there ({error.strerror or error})") from None


def write_atomic(path, data):
    """Writes `data` (str or bytes) to `path` through a temporary file and a rename."""
    with _atomically(path) as partial:
        if isinstance(data, str):
            partial.write_text(data)
        else:
            partial.write_bytes(data)


def copy_atomic(source, path):
    """Copies the file `source` to `path`, atomically."""
    with _atomically(path) as partial:
        shutil.copyfile(source, partial)


def savefig_atomic(figure, path, dpi=100):
    """`figure.savefig(path)`, atomically."""
    with _atomically(path) as partial:
        figure.savefig(partial, dpi=dpi)


def save_model_atomic(model, path):
    """`model.save(path)` for a `.keras` file, atomically."""
    with _atomically(path) as partial:
        model.save(partial)
