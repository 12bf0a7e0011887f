//! OpenAPI links: where the ids in a response lead. A client (or the schema fuzzer) follows them
//! from a created resource to the operations on it: an enqueued job to reading, cancelling and
//! retrying it; a claim to the worker protocol with its lease token; a webhook endpoint to its
//! secret and attempts; a published event to its deliveries; a scheduled flag change to reading
//! and cancelling it.

use serde_json::{Value, json};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, RefOr};

/// Links from the `statuses` of operation `from` to each of `to`, filling the parameters (and
/// body) from the response or request.
struct Chain {
    from: &'static str,
    statuses: &'static [&'static str],
    to: &'static [&'static str],
    parameters: &'static [(&'static str, &'static str)],
    body: Option<fn() -> Value>,
}

const CHAINS: &[Chain] = &[
    Chain {
        from: "enqueueJob",
        statuses: &["200", "201"],
        to: &["getJob", "cancelJob", "retryJob"],
        parameters: &[("id", "$response.body#/id")],
        body: None,
    },
    Chain {
        from: "enqueueJob",
        statuses: &["201"],
        to: &["claimJobs"],
        parameters: &[("name", "$response.body#/queue")],
        body: None,
    },
    Chain {
        from: "createWorkflow",
        statuses: &["201"],
        to: &["getWorkflow", "cancelWorkflow"],
        parameters: &[("id", "$response.body#/id")],
        body: None,
    },
    // Not to `revokeApiKey`: a revoked key stays readable, marked `revoked_at`, for audit,
    // which a client reading DELETE as removal would not expect of the key it created.
    Chain {
        from: "createApiKey",
        statuses: &["201"],
        to: &["getApiKey"],
        parameters: &[("id", "$response.body#/id")],
        body: None,
    },
    Chain {
        from: "createLink",
        statuses: &["201"],
        to: &[
            "getLink",
            "updateLink",
            "deleteLink",
            "getLinkStats",
            "getLinkQrCode",
        ],
        parameters: &[("id", "$response.body#/id")],
        body: None,
    },
    Chain {
        from: "createWebhookEndpoint",
        statuses: &["201"],
        to: &[
            "getWebhookEndpoint",
            "updateWebhookEndpoint",
            "deleteWebhookEndpoint",
            "getWebhookEndpointSecret",
            "rotateWebhookEndpointSecret",
            "listWebhookAttempts",
            "recoverWebhookEndpoint",
        ],
        parameters: &[("id", "$response.body#/id")],
        body: None,
    },
    Chain {
        from: "createEventType",
        statuses: &["201"],
        to: &["getEventType"],
        parameters: &[("name", "$response.body#/name")],
        body: None,
    },
    Chain {
        from: "publishEvent",
        statuses: &["202"],
        to: &["getEvent", "listEventDeliveries"],
        parameters: &[("id", "$response.body#/id")],
        body: None,
    },
    Chain {
        from: "createFlagSchedule",
        statuses: &["201"],
        to: &["getFlagSchedule", "cancelFlagSchedule"],
        parameters: &[("key", "$request.path.key"), ("id", "$response.body#/id")],
        body: None,
    },
    // Not by slug: the slug names the link its id names, so a client that deletes by id and
    // then reads by slug sees the link gone and cannot tell why.
    Chain {
        from: "putRateLimitPolicy",
        statuses: &["200", "201"],
        to: &[
            "getRateLimitPolicy",
            "deleteRateLimitPolicy",
            "checkRateLimit",
            "resetRateLimit",
        ],
        parameters: &[("name", "$request.path.name")],
        body: None,
    },
    Chain {
        from: "claimJobs",
        statuses: &["200"],
        to: &["heartbeatJob", "completeJob"],
        parameters: &[("id", "$response.body#/jobs/0/id")],
        body: Some(|| json!({"lease_token": "$response.body#/jobs/0/lease_token"})),
    },
    Chain {
        from: "claimJobs",
        statuses: &["200"],
        to: &["failJob"],
        parameters: &[("id", "$response.body#/jobs/0/id")],
        body: Some(
            || json!({"lease_token": "$response.body#/jobs/0/lease_token", "error": "failed"}),
        ),
    },
];

/// Adds every chain's links to its operation's responses.
pub fn add(spec: &mut OpenApi) {
    for chain in CHAINS {
        let Some(op) = operation(spec, chain.from) else {
            debug_assert!(false, "no operation {}", chain.from);
            continue;
        };
        for status in chain.statuses {
            let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) else {
                continue;
            };
            for target in chain.to {
                // utoipa 5 writes `operationId` and `requestBody` in snake case, which no
                // reader knows; they go in as extensions, which are written as named.
                let mut fields = vec![("operationId", Value::from(*target))];
                fields.extend(chain.body.map(|body| ("requestBody", body())));
                let mut link = LinkBuilder::new().extensions(Some(Extensions::from_iter(fields)));
                for (name, expression) in chain.parameters {
                    link = link.parameter(*name, *expression);
                }
                response
                    .links
                    .insert((*target).to_owned(), link.build().into());
            }
        }
    }
}

fn operation<'a>(spec: &'a mut OpenApi, id: &str) -> Option<&'a mut Operation> {
    spec.paths.paths.values_mut().find_map(|item| {
        [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.patch.as_mut(),
            item.delete.as_mut(),
        ]
        .into_iter()
        .flatten()
        .find(|op| op.operation_id.as_deref() == Some(id))
    })
}
