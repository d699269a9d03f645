"""Bounded schemathesis fuzzing of our OpenAPI schema against a real server: no 5xx, ever."""

from __future__ import annotations

import time

import pytest
from http_testutil import TOKEN, make_mlp, mlp_params, running_server
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from tpcflow.serve.http.client import TFaaSClient
from tpcflow.serve.http.settings import Settings

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

EXAMPLES = 12  # per operation and mode: about 20 operations x 2 modes in well under 30 s
BUDGET_S = 30.0


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    path = root.parent / "fuzz-mlp.pt"
    make_mlp(path)
    # the fuzzer holds the token, so that upload and delete parse its bodies too
    with running_server(Settings(models_dir=root, api_token=TOKEN, max_request_bytes=1 << 20)) as (url, _app):
        with TFaaSClient(url, token=TOKEN) as c:
            c.upload("mlp", mlp_params("mlp"), path)
        yield url


def test_fuzz_no_server_errors(fuzz_target):
    import httpx

    url = fuzz_target
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    documented = {(path, method.upper()): set(op["responses"])
                  for path, ops in httpx.get(f"{url}/openapi.json").json()["paths"].items() for method, op in ops.items()}
    undocumented = []
    start = time.monotonic()
    failures = []
    tested = 0
    statuses: dict[int, int] = {}
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 15
    passes = [(mode, op, None) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) for op in operations]
    # and the model routes on a model that exists
    passes += [(GenerationMode.POSITIVE, op, {"name": "mlp"}) for op in operations if "{name}" in op.path]
    for mode, op, path_parameters in passes:
        if time.monotonic() - start > BUDGET_S:
            break

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=op.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        def check(case):
            response = case.call(base_url=url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if str(response.status_code) not in documented[(op.path, op.method.upper())]:
                undocumented.append((case.method, op.path, response.status_code))
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code, response.text[:300]))

        try:
            check()
        except Unsatisfiable:  # negative mode of an operation without parameters: nothing to break
            assert mode is GenerationMode.NEGATIVE
            continue
        tested += 1
    assert tested >= 16, tested
    assert not failures, failures[:5]
    # every status the server answered is in the OpenAPI document of its route (schemathesis ST103)
    assert not undocumented, sorted(set(undocumented))[:10]
    # the fuzzer reached both the happy paths and the error paths
    assert statuses.get(200, 0) >= 5 and sum(n for c, n in statuses.items() if 400 <= c < 500) > 50, statuses
    print(statuses)
