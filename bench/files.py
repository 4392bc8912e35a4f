"""Writing files whole or not at all: results, reports and exports are never left half written."""

import contextlib
import os
import tempfile


def file_mode():
    """The mode an ordinary new file gets here (0o666 less the umask): mkstemp's 0600 is not."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def probe_writable(folder):
    """Create `folder` if needed and write and remove a file in it; raise OSError when that fails
    (os.access says yes to root even on read-only mounts)."""
    os.makedirs(folder, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
    os.close(fd)
    os.unlink(probe)


def replace_atomic(path, make, suffix=".tmp"):
    """`make(tmp)` writes a temporary file in `path`'s folder, which is then renamed to `path`:
    the file is whole or absent, never half written, and on any error or interrupt the temporary
    file is removed and `path` left as it was. `suffix` ends the temporary name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        make(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path, write):
    """replace_atomic for content written by `write(f)` to a binary file, synced to disk."""

    def make(tmp):
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    replace_atomic(path, make)


def write_text_atomic(path, text):
    write_atomic(path, lambda f: f.write(text.encode()))
