//! Pier's API suite: a real server on port 0 per test, each scenario on SQLite and PostgreSQL.

mod support;

mod api_keys;
mod cli;
mod contract;
mod crash;
mod delegation;
mod encoding_cors;
mod flag_schedules;
mod flags;
mod guessing;
mod hostile;
mod idempotency;
mod jobs;
mod lifecycle;
mod link_bulk;
mod link_qr;
mod links;
mod listener;
mod oauth;
mod openapi;
mod operations;
mod pagination;
mod permissions;
mod protocol;
mod rate_limits;
mod redirect_misses;
mod sessions;
mod slug_quarantine;
mod traces;
mod webhook_exposure;
mod webhook_fairness;
mod webhook_fencing;
mod webhooks;
mod workflows;
