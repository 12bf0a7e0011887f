#!/usr/bin/env python3
"""The order-fulfilment saga of docs/workflows.md against a running Pier, standard library only.

    PIER_KEY=pier_... python3 examples/order_fulfilment.py [http://127.0.0.1:8080]

Creates two workflows (charge the card, then reserve the stock, then send the e-mail; a refund
compensates the charge) and works the `orders` queue as a worker would: the first order goes
through; the second runs out of stock, which fails its reservation for good (`"discard": true`),
so Pier cancels the e-mail and hands out the refund with the charge's result as its input.
"""

import json
import os
import sys
import urllib.error
import urllib.request

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
KEY = os.environ["PIER_KEY"]
QUEUE = "orders-example"


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data, method=method, headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read() or "null")
    except urllib.error.HTTPError as err:
        sys.exit(f"{method} {path}: {err.code} {err.read().decode()}")


def order(number, in_stock):
    job = lambda kind: {"queue": QUEUE, "kind": kind, "payload": {"order": number, "in_stock": in_stock}}
    return {"name": f"order-{number}", "steps": [
        {"name": "charge_card", "job": job("charge_card"), "compensate": job("refund_card")},
        {"name": "reserve_stock", "depends_on": ["charge_card"], "job": job("reserve_stock")},
        {"name": "send_email", "depends_on": ["reserve_stock"], "job": job("send_email")},
    ]}


def work(job):
    """The handlers: return a result, or raise to fail the job for good."""
    order = job["payload"]["order"]
    if job["kind"] == "charge_card":
        return {"charge": f"ch_{order}"}
    if job["kind"] == "reserve_stock":
        if not job["payload"]["in_stock"]:
            raise LookupError("out of stock")
        return {"reservation": f"rsv_{order}", "charged": job["inputs"]["charge_card"]["charge"]}
    if job["kind"] == "send_email":
        return {"sent": True}
    if job["kind"] == "refund_card":
        return {"refunded": job["inputs"]["charge_card"]["charge"]}
    raise ValueError(f"no handler for {job['kind']}")


def main():
    workflows = [call("POST", "/v1/workflows", order(n, in_stock)) for n, in_stock in ((1, True), (2, False))]
    for wf in workflows:
        print(f"created {wf['id']} ({wf['name']}): " + ", ".join(f"{s['name']}={s['state']}" for s in wf["steps"]))
    while any(call("GET", f"/v1/workflows/{wf['id']}")["state"] in ("running", "compensating") for wf in workflows):
        jobs = call("POST", f"/v1/queues/{QUEUE}/claim", {"max": 10, "wait_seconds": 2})["jobs"]
        for job in jobs:
            lease = {"lease_token": job["lease_token"]}
            try:
                result = work(job)
                call("POST", f"/v1/jobs/{job['id']}/complete", {**lease, "result": result})
                print(f"  {job['kind']:<14} inputs={json.dumps(job.get('inputs'))} -> {json.dumps(result)}")
            except LookupError as err:
                call("POST", f"/v1/jobs/{job['id']}/fail", {**lease, "error": str(err), "discard": True})
                print(f"  {job['kind']:<14} failed for good: {err}")
    for wf in workflows:
        end = call("GET", f"/v1/workflows/{wf['id']}")
        print(f"{end['name']}: {end['state']}" + (f" (failed step: {end['failed_step']})" if end["failed_step"] else ""))
    states = [call("GET", f"/v1/workflows/{wf['id']}")["state"] for wf in workflows]
    assert states == ["completed", "compensated"], states


if __name__ == "__main__":
    main()
