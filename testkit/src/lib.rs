//! labelq's test doubles, for the test suites only (never a dependency of a product crate):
//! in-memory ports that can be told to fail ([`memory`]), detectors that behave as scripted
//! ([`detectors`]), a clock that moves when told ([`ManualClock`]), and the contracts the doubles
//! keep with the real adapters they stand for ([`contract`]: the in-memory job store passes the
//! same one as SQLite and DynamoDB).
//!
//! `TEST_LOG=1` (or a filter such as `TEST_LOG=labelq=debug`) turns on logging in the tests that
//! call [`init_test_log`].

pub mod contract;
pub mod detectors;
pub mod memory;

use std::sync::{Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use labelq_shared::domain::{Clock, ContentType, CorrelationId, OwnerId, SystemClock, truncate_to_millis};
use labelq_shared::service::{SubmitRequest, Upload};
use time::OffsetDateTime;

/// A clock that only moves when told.
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl Default for ManualClock {
    fn default() -> Self {
        Self(Mutex::new(SystemClock.now()))
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        truncate_to_millis(*self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Logs to the test's captured output when `TEST_LOG` is set: `1`/`true` for `info`, or any
/// `tracing` filter. Safe to call from every test.
pub fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Some(value) = std::env::var("TEST_LOG").ok().filter(|v| !v.is_empty() && v != "0") else {
            return;
        };
        let filter = if matches!(value.as_str(), "1" | "true") { "info" } else { value.as_str() };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// A submission by `owner` of a 100x100 [`png_header`], without an idempotency key.
pub fn png_submission(owner: &str) -> SubmitRequest {
    SubmitRequest {
        owner: OwnerId::parse(owner).unwrap_or_else(|e| panic!("a test owner: {e}")),
        upload: Upload { bytes: png_header(100, 100), declared: ContentType::Png },
        idempotency_key: None,
        correlation_id: CorrelationId::new(),
        callback: None,
        source: None,
    }
}

/// A minimal PNG header of the given size: enough for the API's checks, nothing decodable.
pub fn png_header(width: u32, height: u32) -> Bytes {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    v.extend_from_slice(&width.to_be_bytes());
    v.extend_from_slice(&height.to_be_bytes());
    v.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    Bytes::from(v)
}
