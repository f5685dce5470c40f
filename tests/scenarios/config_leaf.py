"""`import serve_graph.config` in a fresh interpreter; prints the serve_graph modules it loaded (JSON).

Config is the leaf of the package: loading it must not load any other serve_graph module.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    import serve_graph.config  # noqa: F401 - the import is the scenario

    print(json.dumps(sorted(m for m in sys.modules if m == "serve_graph" or m.startswith("serve_graph."))))


if __name__ == "__main__":
    main()
