//! When a service should be warm regardless of traffic:
//!
//! - [`windows`]: `keep_warm` windows written by the administrator
//!   (`"Mon-Fri 08:00-19:00"`), in the host's time zone;
//! - [`prewarm`]: learned pre-warming, a start shortly before a service's
//!   habitual first request, from its history of wake-ups;
//! - [`clock`]: the wall clock both read (the system's, or a test's).

pub mod clock;
pub mod prewarm;
pub mod windows;

pub use clock::WallClock;

pub use windows::{Schedule, Window, WindowError};
