"""Scenarios that need a process of their own, run as `python -m tests.scenarios.<name>`.

Real modules (a `main()` and `if __name__ == "__main__"`), never code in strings. Inputs come from
`TEST_*` env vars; the result is the last line printed on stdout (often JSON); a failed assertion
exits non-zero. For example a process gets one global OpenTelemetry provider, so each tracing
scenario (`tracing_*`, started by tests/unit/test_tracing_export.py) configures tracing from env
vars in a fresh interpreter, and `config_leaf` shows what importing `serve_graph.config` loads.
"""
