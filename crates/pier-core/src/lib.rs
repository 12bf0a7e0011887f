//! The vocabulary every Pier crate shares: prefixed ids, injected time, signed cursors, field
//! validation errors and secrets that never print themselves.

pub mod clock;
pub mod cursor;
pub mod id;
pub mod secret;
pub mod validation;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use cursor::{CursorCodec, CursorError};
pub use secret::Secret;
pub use validation::{FieldError, ValidationErrors};
