# A test remote for the `script` module: accounts, statuses, packages and usage kept in a
# JSON file (server setting `accounts_file`), so a test can change "the remote" between
# syncs and audits. The first line (the interpreter) is added by the test.
import fcntl
import json
import os
import sys

req = json.load(sys.stdin)
path = req["server"]["settings"]["accounts_file"]
# The engine runs several actions at once: one process at a time reads, changes and
# writes the file (the lock is released when the process exits).
lock = open(path + ".lock", "w")
fcntl.flock(lock, fcntl.LOCK_EX)
with open(path) as f:
    state = json.load(f)
accounts = state["accounts"]
action = req["action"]
params = req.get("params") or {}


def save():
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def reply(obj):
    print(json.dumps(obj))
    sys.exit(0)


def page(names):
    limit = int(params.get("limit") or 100)
    cursor = params.get("cursor")
    names = sorted(n for n in names if cursor is None or n > cursor)
    chunk = names[:limit]
    nxt = chunk[-1] if len(names) > limit else None
    return chunk, nxt


if state.get("fail"):
    reply({"ok": False, "error": {"kind": "transient", "message": "remote unavailable"}})

svc = req.get("service") or {}
user = svc.get("username")
if action == "create":
    accounts.setdefault(user, {"status": "active", "package": req["product"]["settings"].get("package"), "usage": {}})
    save()
    reply({"ok": True})
if action in ("suspend", "unsuspend"):
    if user not in accounts:
        reply({"ok": False, "error": {"kind": "permanent", "message": "no such account"}})
    accounts[user]["status"] = "suspended" if action == "suspend" else "active"
    save()
    reply({"ok": True})
if action == "terminate":
    accounts.pop(user, None)
    save()
    reply({"ok": True})
if action == "change_package":
    if user not in accounts:
        reply({"ok": False, "error": {"kind": "permanent", "message": "no such account"}})
    accounts[user]["package"] = params["new_product"].get("package")
    save()
    reply({"ok": True})
if action == "lookup":
    a = accounts.get(user)
    reply({"ok": True, "account": None if a is None else {"username": user, "status": a["status"], "package": a.get("package")}})
if action == "list_accounts":
    names, nxt = page(accounts.keys())
    state["list_calls"] = state.get("list_calls", 0) + 1
    save()
    reply({"ok": True, "accounts": [{"username": n, "status": accounts[n]["status"], "package": accounts[n].get("package")} for n in names], "next": nxt})
if action == "usage":
    names, nxt = page(accounts.keys())
    state["usage_calls"] = state.get("usage_calls", 0) + 1
    state["since"] = params.get("since")
    save()
    out = []
    for n in names:
        metrics = {k: {"used": v, "limit": None, "unit": "bytes"} for k, v in accounts[n].get("usage", {}).items()}
        out.append({"username": n, "metrics": metrics})
    reply({"ok": True, "usage": out, "next": nxt})
reply({"ok": False, "error": {"kind": "permanent", "message": "unsupported: " + action}})
