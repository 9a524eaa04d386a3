//! Owners' default callbacks: the URL an owner has labelq call for every job it submits without
//! a `Callback-Url` of its own. Set, read and removed through the API; copied onto each job at
//! submission (so changing it later does not redirect jobs already queued); disabled when a
//! receiver answers 410 Gone to it, until the owner sets it again.

use std::sync::Arc;

use tracing::{info, warn};

use crate::domain::{CallbackUrl, Clock, DefaultCallback, OwnerId};
use crate::ports::{BackendError, DefaultCallbacks};
use crate::webhooks::TargetPolicy;

#[derive(Debug, thiserror::Error)]
pub enum DefaultCallbackError {
    /// The URL names a target labelq will not call.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

#[derive(Debug, Clone)]
pub struct DefaultCallbackService {
    store: Arc<dyn DefaultCallbacks>,
    clock: Arc<dyn Clock>,
    policy: TargetPolicy,
}

impl DefaultCallbackService {
    pub fn new(store: Arc<dyn DefaultCallbacks>, clock: Arc<dyn Clock>, policy: TargetPolicy) -> Self {
        Self { store, clock, policy }
    }

    /// Sets (or replaces, or enables again) the owner's default callback.
    pub async fn set(&self, owner: &OwnerId, url: CallbackUrl) -> Result<DefaultCallback, DefaultCallbackError> {
        self.policy.check_url(&url).map_err(|refusal| DefaultCallbackError::Refused(refusal.0))?;
        let callback = DefaultCallback::new(url, self.clock.now());
        self.store.put(owner, &callback).await?;
        info!(%owner, "default callback set");
        Ok(callback)
    }

    pub async fn get(&self, owner: &OwnerId) -> Result<Option<DefaultCallback>, BackendError> {
        self.store.get(owner).await
    }

    /// Removes it; whether there was one.
    pub async fn remove(&self, owner: &OwnerId) -> Result<bool, BackendError> {
        self.store.delete(owner).await
    }

    /// The URL a new job of the owner's without its own callback is to be called at: the active
    /// default, if it is still one this server may call.
    pub async fn for_new_job(&self, owner: &OwnerId) -> Result<Option<CallbackUrl>, BackendError> {
        let Some(callback) = self.store.get(owner).await?.filter(DefaultCallback::is_active) else {
            return Ok(None);
        };
        match self.policy.check_url(&callback.url) {
            Ok(()) => Ok(Some(callback.url)),
            Err(refusal) => {
                // Set under another policy (the server restarted without private targets).
                warn!(%owner, reason = %refusal.0, "the owner's default callback is not allowed here; not used");
                Ok(None)
            }
        }
    }

    /// A receiver answered 410 Gone at `url`: if that is still the owner's default, no new job gets it.
    pub async fn gone(&self, owner: &OwnerId, url: &CallbackUrl) -> Result<bool, BackendError> {
        let disabled = self.store.disable(owner, url, self.clock.now()).await?;
        if disabled {
            info!(%owner, "the receiver answered 410 Gone; the owner's default callback is disabled");
        }
        Ok(disabled)
    }
}
