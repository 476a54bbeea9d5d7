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
