"""The judge for tests/generated.rs: flagd's Python evaluator, openfeature-flagd-core 1.0.0
(whose `fractional` buckets as the flagd daemon v0.16.1 does; 2.0.0 hashes a CBOR encoding).

Reads {"document": {...}, "keys": [...], "contexts": [...]} on stdin and writes, for each
context and then each key, one line of JSON: [value, variant, reason, error_code].
"""

import json
import sys

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError

request = json.load(sys.stdin)
core = FlagdCore()
core.set_flags(request["document"])
out = []
for context in request["contexts"]:
    attributes = dict(context)
    targeting_key = attributes.pop("targetingKey", None)
    ctx = EvaluationContext(targeting_key=targeting_key, attributes=attributes)
    for key in request["keys"]:
        try:
            details = core._resolve(key, None, ctx, None)
            reason = str(details.reason.value if hasattr(details.reason, "value") else details.reason)
            out.append([details.value, details.variant, reason, None])
        except OpenFeatureError as error:
            out.append([None, None, "ERROR", error.error_code.value])
sys.stdout.write("\n".join(json.dumps(line) for line in out))
