//! Services: the use cases, written once against the ports and shared by `labelq serve` and the
//! Lambda functions.
//!
//! - [`SubmitService`]: accept an image (request-handler).
//! - [`QueryService`]: get, list and delete an owner's images (status-api).
//! - [`WorkerService`]: process one queue message (worker).
//! - [`CallbackService`]: deliver one job's completion callback.
//! - [`DefaultCallbackService`]: an owner's default callback, for jobs that name none.
//! - [`WatchService`]: follow an owner's jobs as they change (live push).
//! - [`DropIntake`]: a dropped image becomes a job (fire-and-forget).
//! - [`SubmitService::reserve_upload`]: a job that waits for the client's own upload of its image.

mod callbacks;
mod default_callbacks;
mod drops;
mod query;
mod submit;
mod uploads;
mod watch;
mod worker;

use std::sync::Arc;

use crate::ports::{ImageStore, JobStore};

/// The stores every service works on: where images live and where jobs are recorded.
#[derive(Debug, Clone)]
pub struct Stores {
    pub images: Arc<dyn ImageStore>,
    pub jobs: Arc<dyn JobStore>,
}

pub use callbacks::{CallbackConfig, CallbackService};
pub use default_callbacks::{DefaultCallbackError, DefaultCallbackService};
pub use drops::{DropIntake, Dropped, Taken};
pub use query::{QueryError, QueryService};
pub use submit::{Submission, SubmitConfig, SubmitError, SubmitRequest, SubmitService, Upload};
pub use uploads::{Reservation, UploadRequest};
pub use watch::{Change, JobChanges, JobFeed, OwnerChange, OwnerFeed, WatchConfig, WatchService, WatchedJobStore};
pub use worker::{Announce, Backoff, ClaimSlot, Disposition, Finish, UPLOAD_GRACE, WorkerConfig, WorkerService};
