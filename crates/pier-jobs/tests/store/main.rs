//! The job store and runtime against real databases, each scenario on SQLite and PostgreSQL.

mod support;

mod counters;
mod races;
mod tenants;
mod wakeups;
mod workers;
mod workflows;
