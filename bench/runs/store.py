"""Saved runs: numbered files that are whole or absent, and never overwritten."""

import os

from bench import files


def protect_saved_runs(storage):
    """pytest-benchmark numbers a saved run after the newest one on disk and then opens it for
    writing; two runs ending together would pick the same name, and a kill mid-write would
    leave half a file. Write a temporary file, then hard-link it to its final name, which
    fails rather than replace an existing run: on a clash take the next number. A saved run
    is whole or absent, and never overwritten."""
    import tempfile

    from pytest_benchmark.utils import safe_dumps

    def save(output_json, name):
        data = safe_dumps(output_json, ensure_ascii=True, indent=4).encode()
        folder = storage.get("")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".saving-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, files.file_mode())  # mkstemp makes 0600; a saved run is an ordinary file
            number = int(storage._next_num)
            while True:
                path = storage.get(f"{number:04d}_{name}_{os.getpid()}.json")
                try:
                    os.link(tmp, path)
                    break
                except FileExistsError:
                    number += 1
        finally:
            os.unlink(tmp)
        storage.logger.info(f"Saved benchmark data in: {path}")
        storage.saved.append(path)

    storage.save = save
    storage.saved = []
