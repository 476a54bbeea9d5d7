"""Drives a live Provisio through a Python client generated from docs/openapi.json by
openapi-python-client (the test `contract::a_generated_python_client_works`).

Usage: generated_client.py BASE_URL API_KEY; the generated package `provisio_client` is on
PYTHONPATH. Exits non-zero, saying why, when the client and the server disagree.
"""

import sys

from provisio_client import AuthenticatedClient
from provisio_client.api.clients import create_client, get_client, list_clients
from provisio_client.models import ClientCreate, ClientView, Problem

base, key = sys.argv[1], sys.argv[2]
api = AuthenticatedClient(base_url=base, token=key, raise_on_unexpected_status=True)


def expect(cond, what):
    if not cond:
        sys.exit(f"generated client: {what}")


made = create_client.sync(client=api, body=ClientCreate(name="Ada Lovelace", email="ada@example.com"))
expect(isinstance(made, ClientView), f"create answered {made!r}")
expect(made.email == "ada@example.com", f"created {made!r}")

got = get_client.sync(client=api, id=made.id)
expect(isinstance(got, ClientView) and got.name == "Ada Lovelace", f"get answered {got!r}")

page = list_clients.sync(client=api, limit=10)
expect(any(c.id == made.id for c in page.items), f"list answered {page!r}")

bad = create_client.sync(client=api, body=ClientCreate(name="Bad", email="not-an-email"))
expect(isinstance(bad, Problem), f"a bad email answered {bad!r}")
expect(bad.status == 422 and any(e.field == "email" for e in bad.errors), f"problem {bad!r}")

missing = get_client.sync(client=api, id=made.id + 1000)
expect(isinstance(missing, Problem) and missing.status == 404, f"an unknown id answered {missing!r}")

print("generated client: create, get, list, a 422 and a 404 as the document says")
