"""``python -m torch.distributed.run ... tests/audited_run.py run.py ARGS``: run ``run.py`` in this
process and record what it writes under ``$AUDIT_ROOT`` (tests/test_distributed.py).

Python's audit hooks (``sys.addaudithook``) see every ``open`` for writing and every rename,
link, removal and folder creation, whatever library makes it. Each rank saves its list to
``$AUDIT_DIR/rank<RANK>.json`` when it exits.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
EVENTS = {
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.link",
    "os.symlink",
    "os.mkdir",
    "os.truncate",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.move",
}


def main() -> None:
    root = os.path.realpath(os.environ["AUDIT_ROOT"])
    out = os.path.join(os.environ["AUDIT_DIR"], f"rank{os.environ.get('RANK', '0')}.json")
    writes: list[list[str]] = []

    def under_root(path: object) -> str | None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return None
        full = os.path.realpath(os.path.abspath(path))
        return full if full == root or full.startswith(root + os.sep) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            )
            if writing and (full := under_root(path)):
                writes.append([event, full])
        elif event in EVENTS:
            two = event in {"os.rename", "os.link", "os.symlink", "shutil.copyfile", "shutil.move"}
            for path in args[: 2 if two else 1]:  # source and destination of a rename
                if full := under_root(path):
                    writes.append([event, full])

    def save() -> None:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(writes, f)

    atexit.register(save)
    sys.addaudithook(hook)
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
