"""One OS process of the exactness test/benchmark (not a test module).

``python tests/limits/exact_worker.py CONFIG_JSON``: builds a Keel app from the settings in
CONFIG_JSON, prints ``ready``, waits for a line on stdin, then for each repeat r sends
``requests`` calls of ``path`` from the address 10.99.<r>.1 and prints one JSON line:
``{"admitted": [per repeat], "statuses": {status: count}}``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    config = json.loads(sys.argv[1])
    repeats, n, path = config.pop("repeats"), config.pop("requests"), config.pop("path")
    from core import create_app

    app = create_app(config, env={})
    client = app.test_client()
    print("ready", flush=True)
    sys.stdin.readline()
    admitted = []
    statuses: Counter[int] = Counter()
    for r in range(repeats):
        environ = {"REMOTE_ADDR": f"10.99.{r}.1"}
        ok = 0
        for _ in range(n):
            status = client.get(path, environ_base=environ).status_code
            statuses[status] += 1
            ok += status == 200
        admitted.append(ok)
    print(json.dumps({"admitted": admitted, "statuses": statuses}), flush=True)
    app.extensions["keel"].dispose()


if __name__ == "__main__":
    main()
