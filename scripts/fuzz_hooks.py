"""schemathesis hooks for scripts/fuzz_api.py (loaded through SCHEMATHESIS_HOOKS).

An endless answer cannot be checked: every generated call of the event stream asks it to send what there
is and close (`once=true`); otherwise each call would wait for the request time-out.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if case.operation.path == "/api/v1/stream":
        case.query = {**(case.query or {}), "once": "true"}
    return case
