"""The package's build; everything but the compiled modules is in setup.cfg.

`INVENTIV_MYPYC=1 pip install .` compiles the modules of an inference request's path with mypyc (the
compiler mypy ships, which turns type-annotated Python into C extension modules; a C compiler and the
Python headers are needed). They are the same source, checked by the same tests: compiled, the gateway
spends 13 % less CPU per non-streaming request (benchmarks/RESULTS.md). Without the variable, or in an
editable install, the package is plain Python; `make test` runs the tests on both.

`INVENTIV_MYPYC_BUILD` names the folder of the generated C (default `build`).
"""

import os

from setuptools import setup

# The modules every inference request runs through. Left out: gateway/errors.py (aiohttp's middleware
# decorator sets an attribute on a function, which a compiled function does not take), gateway/
# upstream_errors.py (classes of two bases), gateway/usage_recorder.py (orjson reads a dataclass's
# slots directly, and a compiled class has none), and everything off the request path.
COMPILED = [
    "gateway/auth.py",
    "gateway/hot_metrics.py",
    "gateway/inference.py",
    "gateway/inference_connection.py",
    "gateway/lifecycle.py",
    "gateway/model_resolution.py",
    "gateway/relay.py",
    "gateway/request_body.py",
    "gateway/tracing.py",
    "gateway/upstream.py",
    "gateway/workers.py",
]


def _ext_modules() -> list:
    if os.environ.get("INVENTIV_MYPYC") != "1":
        return []
    from mypyc.build import mypycify

    # One shared library for all of them, under a fixed name (mypyc otherwise names it by a hash).
    return mypycify(COMPILED, group_name="inventiv_gateway", target_dir=os.environ.get("INVENTIV_MYPYC_BUILD", "build"))


# Not when imported (tests/gateway/test_compiled.py reads COMPILED); setuptools runs this file as __main__.
if __name__ == "__main__":
    setup(ext_modules=_ext_modules())
