//! The vocabulary every Pier crate shares: prefixed ids (the tenant's among them), injected time,
//! signed cursors, field validation errors and secrets that never print themselves.

pub mod clock;
pub mod cursor;
pub mod hash_gate;
pub mod id;
pub mod password;
pub mod patch;
pub mod schema;
pub mod seal;
pub mod secret;
pub mod tenant;
pub mod trace;
pub mod validation;
pub mod whole;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use cursor::{CursorCodec, CursorError};
pub use hash_gate::{Busy, HashGate};
pub use patch::Patch;
pub use seal::{MasterKey, SealError, SubKey};
pub use secret::{Secret, SecretUrl};
pub use tenant::WorkspaceId;
pub use validation::{FieldError, Label, ValidationErrors};
