"""Atomic writes: a crash leaves the old file or the new one, never half of one."""
import os
import pathlib


def _partial(path):
    """A hidden sibling of `path` that keeps its suffix (matplotlib and Keras
    read the format from it)."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def _commit(partial, path):
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)


def write_atomic(path, data):
    """Writes `data` (str or bytes) to `path` through a temporary file and a rename."""
    path = pathlib.Path(path)
    partial = _partial(path)
    if isinstance(data, str):
        partial.write_text(data)
    else:
        partial.write_bytes(data)
    _commit(partial, path)


def savefig_atomic(figure, path, dpi=100):
    """`figure.savefig(path)`, atomically."""
    path = pathlib.Path(path)
    partial = _partial(path)
    figure.savefig(partial, dpi=dpi)
    _commit(partial, path)


def save_model_atomic(model, path):
    """`model.save(path)` for a `.keras` file, atomically."""
    path = pathlib.Path(path)
    partial = _partial(path)
    model.save(partial)
    _commit(partial, path)
