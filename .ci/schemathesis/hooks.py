"""What schemathesis needs to know about Pier that a JSON Schema cannot say.

Each hook below keeps generated requests inside a rule that depends on time, on another field
or on earlier requests. The OpenAPI document states every one of these rules in words; the
hooks only touch values that are valid for the schema, so what the fuzzer sends stays a
schema-valid (or schema-invalid) request as it was generated.
"""

import itertools
from collections.abc import MutableMapping
import json
import re
from datetime import datetime, timedelta, timezone

import schemathesis

# Pier's Idempotency-Key rule (crates/pier-api/src/middleware/idempotency.rs).
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
# The largest `max(limit, burst) × period in ms` of a rate-limit policy.
SCALED = 1 << 52
FUTURE = "2100-01-01T00:00:00Z"
_serial = itertools.count()


def _time(text):
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def _whole(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == int(value)


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    """NDJSON import bodies: one JSON value a line (a generated list is several rows)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    rows = value if isinstance(value, list) else [value]
    return "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")


@schemathesis.hook
def before_call(context, case, kwargs):
    """Runs before every request of every phase. Each adjustment replaces a value that is valid
    for the schema with another valid one, so a case generated to be invalid stays invalid."""
    if isinstance(case.headers, MutableMapping):
        unique_idempotency_key(case.headers)
    if isinstance(case.body, dict):
        adjust_body(f"{case.method.upper()} {case.operation.path}", case.body)
        flags_body(f"{case.method.upper()} {case.operation.path}", case.body)
    if isinstance(case.query, dict) and case.operation.path == "/v1/links/{id}/stats":
        stats_range(case.query)


def unique_idempotency_key(headers):
    """A key reused with another request is `422 idempotency_key_reused`, as the
    Idempotency-Key draft asks; generated cases repeat keys by chance, so each gets its own."""
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and len(key) <= 255 and IDEMPOTENCY_KEY.fullmatch(key):
        headers["Idempotency-Key"] = f"{key[:240]}~{next(_serial)}"


def adjust_body(name, body):
    # An expiry must be in the future when it is set.
    if name in ("POST /v1/api-keys", "POST /v1/links", "PATCH /v1/links/{id}"):
        at = _time(body.get("expires_at"))
        if at is not None and at.tzinfo is not None and at <= datetime.now(timezone.utc):
            body["expires_at"] = FUTURE
    # A key's scopes narrow its role, so each must be in the role: an owner holds them all.
    if name == "POST /v1/api-keys" and isinstance(body.get("scopes"), list) and body["scopes"]:
        if body.get("role") in (None, "owner", "admin", "member", "viewer"):
            body["role"] = "owner"
    if name == "PUT /v1/rate-limit-policies/{name}":
        limit, period, burst = body.get("limit"), body.get("period_seconds"), body.get("burst")
        # Only GCRA has a burst: a window's burst is its limit.
        if body.get("algorithm") in ("fixed_window", "sliding_window") and _whole(burst):
            del body["burst"]
            burst = None
        # A policy's counts must stay exact in a double: shorten the period until they do.
        if _whole(limit) and _whole(period) and limit >= 1 and period >= 1:
            largest = max(int(limit), int(burst) if _whole(burst) else 0)
            if largest * int(period) * 1000 > SCALED:
                body["period_seconds"] = max(1, SCALED // (largest * 1000))
    # An enabled endpoint receives every event the run publishes and every link change it
    # makes: with hundreds of endpoints that is a load test, not a contract check. Endpoints
    # start disabled unless the case says otherwise.
    if name == "POST /v1/webhook-endpoints" and "enabled" not in body:
        body["enabled"] = False
    # A claim on an empty queue waits up to `wait_seconds`; the fuzzer has nothing to wait for.
    if name == "POST /v1/queues/{name}/claim" and _whole(body.get("wait_seconds")):
        if 0 <= body["wait_seconds"] <= 30:
            body["wait_seconds"] = 0
    # A check may cost at most the policy's burst, which the fuzzer's policies may set to 1.
    if name in ("POST /v1/rate-limit-policies/{name}/check", "POST /v1/rate-limit-checks"):
        if _whole(body.get("cost")) and body["cost"] >= 1:
            body["cost"] = 1


def flag_definition(definition):
    """A flag's variants share one type, its defaultVariant names one of them, and its targeting
    uses known operators only: keep the variants' first type, name the first variant, and leave
    targeting empty (rules are checked beyond the schema and answer 422 with their path)."""
    variants = definition.get("variants")
    if isinstance(variants, dict) and variants:
        kinds = (bool, str, (int, float), dict)
        first = next(iter(variants.values()))
        kind = next((k for k in kinds if isinstance(first, k)), None)
        if kind == (int, float) and isinstance(first, bool):
            kind = bool
        for name, value in variants.items():
            same = kind is not None and isinstance(value, kind)
            if kind == (int, float) and isinstance(value, bool):
                same = False
            if kind is None or not same:
                variants[name] = first if kind is not None else True
        default = definition.get("defaultVariant")
        if isinstance(default, str) and default not in variants:
            definition["defaultVariant"] = next(iter(variants))
    if isinstance(definition.get("targeting"), dict):
        definition["targeting"] = {}


def flags_body(name, body):
    if name in ("POST /v1/flags", "PUT /v1/flags/{key}") and isinstance(body.get("definition"), dict):
        flag_definition(body["definition"])
    if name == "PUT /v1/flags/document":
        if isinstance(body.get("flags"), dict):
            body["flags"].pop("document", None)
            for definition in body["flags"].values():
                if isinstance(definition, dict):
                    flag_definition(definition)
        if isinstance(body.get("$evaluators"), dict):
            body["$evaluators"] = {}
    # A merge patch lands on the flag's current definition, which the fuzzer does not know:
    # only its state and metadata are safe to change.
    if name == "PATCH /v1/flags/{key}" and isinstance(body.get("definition"), dict):
        for member in [m for m in body["definition"] if m not in ("state", "metadata")]:
            del body["definition"][member]
    # A scheduled change is a merge patch too, applied in the future (at most 366 days ahead).
    if name == "POST /v1/flags/{key}/schedules":
        if isinstance(body.get("patch"), dict):
            for member in [m for m in body["patch"] if m not in ("state", "metadata")]:
                del body["patch"][member]
        at, now = _time(body.get("apply_at")), datetime.now(timezone.utc)
        if at is not None and at.tzinfo is not None and not now < at < now + timedelta(days=366):
            body["apply_at"] = (now + timedelta(days=1)).isoformat().replace("+00:00", "Z")


def stats_range(query):
    """Statistics cover `from` up to `to` (default now), at most 31 days of hours or about
    three years of days: keep generated ranges inside that."""
    start, end = _time(query.get("from")), _time(query.get("to"))
    if start is None or end is None and "to" in query:
        return
    end = end or datetime.now(timezone.utc)
    if start.tzinfo is None or end.tzinfo is None:
        return
    longest = timedelta(days=31) if query.get("interval") == "hour" else timedelta(days=1000)
    if not start < end or end - start > longest:
        query["from"] = (end - timedelta(days=1)).isoformat().replace("+00:00", "Z")
