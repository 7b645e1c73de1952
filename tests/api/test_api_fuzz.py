"""Schemathesis against the live `/openapi.json`: generated valid and invalid
requests for every operation, as several roles. No 5xx, and every response
matches the documented status codes, media types and schemas."""

from __future__ import annotations

from typing import Any

import schemathesis
from api_support import Api, World
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES_PER_OPERATION_AND_MODE = 30
MIN_CASES = 1_000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_fuzz_openapi(api: Api, world: World) -> None:
    account_id = world.account(10_000)
    tokens = [
        api.auth("admin"),
        api.auth("trader"),
        api.auth("cashier"),
        api.auth("bettor", account_id),
    ]
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) >= 19
    cases = 0
    statuses: set[int] = set()

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), auth=st.sampled_from(tokens))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any, auth: dict[str, str]) -> None:
                nonlocal cases
                cases += 1
                response = case.call(base_url=api.url, headers=auth, timeout=20)
                statuses.add(response.status_code)
                assert response.status_code < 500, (case.as_curl_command(), response.text)
                case.validate_response(response, checks=CHECKS)

            run()

    assert cases >= MIN_CASES, cases
    assert any(200 <= status < 300 for status in statuses)
    print(f"schemathesis: {cases} generated cases over {len(operations)} operations")
