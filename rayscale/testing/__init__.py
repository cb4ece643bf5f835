"""Test and benchmark helpers: a stand-in learner rank (`toy_learner.ToyLearner`) and a loopback
OpenAI-compatible chat-completions server with fault injection (`chat_server.FakeChatServer`).

For tests and benchmarks only. Nothing in production (any other module of `rayscale`) imports this package;
`tests/test_package_boundaries.py` enforces that. It lives in the package rather than under `tests/` because the
`benchmarks/` scripts, run as `python benchmarks/x.py`, use it too. `chat_server` needs aiohttp, which is in the
`test` extra, not in the runtime dependencies.
"""
