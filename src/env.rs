//! What the logic runs against: the component's imports (storage, mail, wall
//! clock, randomness) and the host's code key.
//!
//! Inside the component they are the WIT imports (`component.rs`); natively a
//! host implements [`Env`] over its own services, which is how the native
//! baseline and the unit tests run the very same logic.

use crate::model::*;
use crate::storage::{HostResult, Storage};

pub trait Env {
    /// The `storage` import.
    fn storage(&self) -> &dyn Storage;
    /// Wall-clock time, milliseconds since the Unix epoch.
    fn now_ms(&mut self) -> TimestampMs;
    /// `len` cryptographically secure random bytes.
    fn random_bytes(&mut self, len: usize) -> Vec<u8>;
    /// The host's secret key for hashing second-factor codes (kept outside
    /// storage, so a copied database does not yield the codes).
    fn code_key(&self) -> &[u8];
    /// The `mail` import.
    fn send_mail(&mut self, message: &MailMessage) -> HostResult<()>;
}
