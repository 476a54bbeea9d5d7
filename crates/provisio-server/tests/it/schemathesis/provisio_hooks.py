"""Schemathesis hooks for Provisio's contract test.

Loaded through SCHEMATHESIS_HOOKS by the test `contract::*::schemathesis_finds_no_failure`.
"""

import os

import schemathesis

# The key schemathesis itself sends: revoking it would end the run with nothing but 401s.
OWN_KEY_ID = os.environ.get("PROVISIO_SCHEMATHESIS_KEY_ID", "")


@schemathesis.hook("filter_path_parameters").apply_to(method="DELETE", path="/v1/keys/{id}")
def keep_own_key(ctx, path_parameters):
    return path_parameters is None or str(path_parameters.get("id")) != OWN_KEY_ID


# Rules the OpenAPI document can state; a schema-valid request refused for one of them
# means the document left a constraint out.
STATABLE_RULES = {
    "type",
    "unknown_field",
    "range",
    "min",
    "max",
    "length",
    "pattern",
    "enum",
    "format",
}

# `required` is statable when it means "missing" or "empty" (required, minLength), not when
# it depends on another field ("is required for http handlers").
STATABLE_REQUIRED = ("is required", "must not be empty")


def _statable(error):
    rule = error.get("rule")
    if rule in STATABLE_RULES:
        return True
    if rule == "required":
        message = error.get("message", "")
        return message.endswith(STATABLE_REQUIRED)
    return False


@schemathesis.check
def refusals_name_unstated_rules(ctx, response, case):
    """A schema-valid request refused 400 or 422 names only rules the document cannot state."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 422):
        return None
    try:
        problem = response.json()
    except ValueError:
        raise AssertionError(f"a {response.status_code} answer is not JSON")
    if problem.get("type") == "https://provisio.dev/problems/forbidden-by-handler":
        return None
    errors = problem.get("errors", [])
    if not errors:
        raise AssertionError(
            f"a schema-valid request was refused {response.status_code} naming no field: {problem.get('detail')}"
        )
    statable = [e for e in errors if _statable(e)]
    if statable:
        named = ", ".join(f"{e['field']} ({e['rule']})" for e in statable)
        raise AssertionError(
            f"a schema-valid request was refused for rules the document could state: {named}"
        )
    return None
