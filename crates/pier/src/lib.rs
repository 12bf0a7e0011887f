//! The `pier` binary's pieces: command line, configuration, telemetry, and the application
//! that ties the crates together. A library so integration tests run the real thing.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
mod last_writes;
mod secret_key;
mod serve_lock;
mod server;
pub mod telemetry;
pub mod webhook_verify;

pub use app::{Application, launch, shutdown_signal};
pub use config::Config;
