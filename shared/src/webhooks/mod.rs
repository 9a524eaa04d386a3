//! Completion callbacks as Standard Webhooks (<https://www.standardwebhooks.com>): the signature
//! both sides compute ([`signature`]), which addresses labelq may call ([`target`]), the event a
//! receiver gets ([`event`]) and when a failed call is tried again ([`schedule`]). The delivery
//! itself is [`crate::service::CallbackService`]; the HTTP client behind it is an adapter.

pub mod event;
pub mod schedule;
pub mod signature;
pub mod target;

pub use event::{WebhookEvent, webhook_id};
pub use schedule::RetrySchedule;
pub use signature::{SignatureError, WebhookSecret, WebhookSecrets, verify};
pub use target::{Refusal, TargetPolicy};
