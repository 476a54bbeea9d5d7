#!/usr/bin/env -S python3 -I -S
"""An example Provisio `script` module: accounts kept in a local JSON file.

It stands in for a remote system so that the whole protocol can be tried without one:
the accounts file is "the remote", and every change it makes is appended to an effects
log, one JSON line per effect, so that a test can count what happened.

Protocol (see docs/modules/script.md): one JSON request on stdin, one JSON reply on
stdout. Standard library only. Server settings it reads:

  accounts_file  where the accounts live (default example-accounts.json)
  effects_file   the append-only effects log (default example-effects.jsonl)

Both are relative to the working directory, which the engine sets to the modules dir.
"""

import datetime
import fcntl
import json
import os
import secrets
import sys
import tempfile

DEFAULT_ACCOUNTS_FILE = "example-accounts.json"
DEFAULT_EFFECTS_FILE = "example-effects.jsonl"
DEFAULT_PAGE_SIZE = 100


class ModuleError(Exception):
    """A failure reported to the engine with its kind: transient, permanent or unknown."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def permanent(message):
    return ModuleError("permanent", message)


class Store:
    """The accounts file and the effects log, used under one exclusive lock."""

    def __init__(self, settings):
        self.accounts_path = settings.get("accounts_file") or DEFAULT_ACCOUNTS_FILE
        self.effects_path = settings.get("effects_file") or DEFAULT_EFFECTS_FILE
        self.lock_path = self.accounts_path + ".lock"
        self.lock_file = None
        self.data = None

    def __enter__(self):
        # Several workers may run this script at once; holding the lock from the first read
        # to the last write makes every action one atomic read-modify-write.
        self.lock_file = open(self.lock_path, "a")
        fcntl.flock(self.lock_file, fcntl.LOCK_EX)
        try:
            with open(self.accounts_path, encoding="utf-8") as f:
                self.data = json.load(f)
        except FileNotFoundError:
            self.data = {"accounts": {}}
        self.data.setdefault("accounts", {})
        # Which (idempotency key, action) pairs were applied, so a repeat is found without
        # reading the whole effects log.
        self.data.setdefault("applied", {})
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.lock_file, fcntl.LOCK_UN)
        self.lock_file.close()
        return False

    @property
    def accounts(self):
        return self.data["accounts"]

    def save(self):
        # Write a new file and rename it over the old one, so that a crash leaves either
        # the old accounts or the new ones, never half a file.
        directory = os.path.dirname(os.path.abspath(self.accounts_path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".accounts-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.data, f, sort_keys=True, separators=(",", ":"))
        os.replace(tmp, self.accounts_path)

    def effects(self):
        try:
            with open(self.effects_path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def has_effect(self, key, action):
        return action in self.data["applied"].get(key, [])

    def record_effect(self, key, action, username):
        effect = {
            "key": key,
            "action": action,
            "username": username,
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        # The accounts and the applied marker are saved together before the effect is logged,
        # so a logged effect is always one the accounts file holds.
        self.data["applied"].setdefault(key, []).append(action)
        self.save()
        with open(self.effects_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(effect) + "\n")


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def username_of(request):
    service = request.get("service") or {}
    username = service.get("username")
    if not username:
        raise permanent("the request has no service username")
    return username


def product_package(request):
    return ((request.get("product") or {}).get("settings") or {}).get("package")


def remote_view(username, account):
    """An account as the engine sees it (lookup, list_accounts)."""
    return {"username": username, "status": account.get("status"), "package": account.get("package")}


def create(store, request, key):
    username = username_of(request)
    existing = store.accounts.get(username)
    if existing is not None:
        # The same key means this is a retry of the job that created it: answer as the
        # first attempt did and change nothing.
        if existing.get("created_key") == key:
            return {"outputs": existing.get("outputs", {})}
        raise permanent(f"username taken: {username}")
    outputs = {"pass_key": secrets.token_hex(16)}
    store.accounts[username] = {
        "status": "active",
        "package": product_package(request),
        "created_key": key,
        "created_at": now(),
        "outputs": outputs,
    }
    store.record_effect(key, "create", username)
    return {"outputs": outputs}


def change(apply):
    """Wraps an action that changes one existing account: a repeat of the same job (same
    key and action already applied) is a no-op, anything else changes the
    account and records one effect."""

    def run(store, request, key):
        action = request["action"]
        username = username_of(request)
        if store.has_effect(key, action):
            return {}
        account = store.accounts.get(username)
        if account is None:
            raise permanent(f"no such account: {username}")
        apply(store, request, username, account)
        store.record_effect(key, action, username)
        return {}

    return run


def set_status(status):
    def apply(store, request, username, account):
        account["status"] = status

    return apply


def terminate_account(store, request, username, account):
    del store.accounts[username]


def change_password(store, request, username, account):
    # A real remote would set the password; this stand-in keeps only the fact, because
    # plaintext passwords do not belong in files.
    if not (request.get("params") or {}).get("new_password"):
        raise permanent("change_password needs params.new_password")
    account["password_changed_at"] = now()


def change_package(store, request, username, account):
    new_product = (request.get("params") or {}).get("new_product") or {}
    package = new_product.get("package") or product_package(request)
    if not package:
        raise permanent("no package: set params.new_product.package or the product's package")
    account["package"] = package


def renew(store, request, username, account):
    account["renewed_at"] = now()


def lookup(store, request, key):
    username = username_of(request)
    account = store.accounts.get(username)
    if account is None:
        return {"account": None}
    # After a create whose reply was lost, the engine keeps the lookup's outputs in its
    # place: answer the ones create answered.
    return {"account": remote_view(username, account), "outputs": account.get("outputs", {})}


def list_accounts(store, request, key):
    params = request.get("params") or {}
    limit = params.get("limit") or DEFAULT_PAGE_SIZE
    if not isinstance(limit, int) or limit < 1:
        raise permanent("params.limit must be a positive integer")
    cursor = params.get("cursor")
    names = sorted(n for n in store.accounts if cursor is None or n > cursor)
    page = names[:limit]
    # Another page exists only if names remain after this one; the cursor is the last
    # username shown.
    following = page[-1] if len(names) > limit else None
    return {
        "accounts": [remote_view(n, store.accounts[n]) for n in page],
        "next": following,
    }


def usage(store, request, key):
    reports = []
    for username in sorted(store.accounts):
        metrics = store.accounts[username].get("usage") or {"disk": {"used": 0, "limit": None, "unit": "bytes"}}
        reports.append({"username": username, "metrics": metrics})
    return {"usage": reports}


def test_connection(store, request, key):
    # Entering the store already read the accounts file; prove both files are writable.
    store.save()
    with open(store.effects_path, "a", encoding="utf-8"):
        pass
    return {}


ACTIONS = {
    "create": create,
    "suspend": change(set_status("suspended")),
    "unsuspend": change(set_status("active")),
    "terminate": change(terminate_account),
    "change_password": change(change_password),
    "change_package": change(change_package),
    "renew": change(renew),
    "lookup": lookup,
    "list_accounts": list_accounts,
    "usage": usage,
    "test_connection": test_connection,
}


def handle(request):
    action = request.get("action")
    handler = ACTIONS.get(action)
    if handler is None:
        raise permanent(f"unsupported action: {action}")
    key = request.get("idempotency_key") or ""
    settings = (request.get("server") or {}).get("settings") or {}
    with Store(settings) as store:
        return handler(store, request, key)


def reply(obj):
    sys.stdout.write(json.dumps(obj))
    sys.stdout.write("\n")


def main():
    try:
        request = json.load(sys.stdin)
        if not isinstance(request, dict):
            raise ValueError("not an object")
    except ValueError as e:
        reply({"ok": False, "error": {"kind": "permanent", "message": f"unreadable request: {e}"}})
        return
    try:
        result = handle(request)
    except ModuleError as e:
        reply({"ok": False, "error": {"kind": e.kind, "message": e.message}})
        return
    except OSError as e:
        # A full disk or a permission problem may pass; let the engine retry.
        reply({"ok": False, "error": {"kind": "transient", "message": f"{e.strerror}: {e.filename}"}})
        return
    reply({"ok": True, **result})


if __name__ == "__main__":
    main()
