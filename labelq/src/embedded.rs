//! The embedded backends of `labelq serve`: one data directory holds everything.
//!
//! ```text
//! DATA_DIR/images/{id}     the images
//! DATA_DIR/uploads/{id}    the images clients uploaded directly (`PUT /v1/uploads/{id}`)
//! DATA_DIR/upload-signing.key  the key upload targets are signed with (mode 0600)
//! DATA_DIR/jobs.sqlite3    the jobs
//! DATA_DIR/queue.sqlite3   the queue and its dead letters
//! DATA_DIR/callbacks.sqlite3  the completion callbacks waiting for delivery, and their dead letters
//! DATA_DIR/owners.sqlite3  owners' default callbacks
//! DATA_DIR/callback-secrets   the callbacks' signing secrets, when none are configured (mode 0600)
//! DATA_DIR/holders/{id}    one registration per running process (see `Holder`)
//! ```
//!
//! Opening the directory registers this process as a holder and gives back at once what holders
//! that are gone still held (a process killed with SIGKILL leaves its claims and in-flight
//! messages behind): their jobs go back to PENDING and their messages become visible, so a
//! restart resumes them without waiting out the lease and the visibility timeout. A live process
//! sharing the directory keeps what it holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use labelq_shared::adapters::fs::FsImageStore;
use labelq_shared::adapters::sqlite::{Holder, QueueCounts, SqliteDefaultCallbacks, SqliteJobStore, SqliteQueue};
use labelq_shared::config::MaxReceives;
use labelq_shared::domain::Clock;
use labelq_shared::ports::{BackendError, ImageStore};
use labelq_shared::service::Stores;
use labelq_shared::webhooks::{WebhookSecret, WebhookSecrets};
use tracing::info;

/// Deliveries of one callback message before the queue dead-letters it. The delivery gives up on
/// its own when the retry schedule (at most 21 attempts) is spent; this only ends a message that
/// keeps crashing its handler.
const CALLBACK_RECEIVES: MaxReceives = MaxReceives::CALLBACKS;

#[derive(Debug, Clone)]
pub struct Embedded {
    pub images: Arc<FsImageStore>,
    pub jobs: Arc<SqliteJobStore>,
    pub queue: Arc<SqliteQueue>,
    /// The callback queue: one "job finished" message per job with a callback to deliver.
    pub callbacks: Arc<SqliteQueue>,
    /// Owners' default callbacks.
    pub defaults: Arc<SqliteDefaultCallbacks>,
    /// This process's registration, held while any clone lives.
    holder: Arc<Holder>,
    /// The directory everything is in.
    pub data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("could not use the data directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not open the database {path}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("could not give back what a stopped process held in {path}")]
    Recover {
        path: PathBuf,
        #[source]
        source: BackendError,
    },
}

/// What an expiry pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub jobs: usize,
    pub images: usize,
}

impl Embedded {
    /// Opens (creating if needed) the data directory, registers this process, and gives back
    /// what departed processes held.
    pub async fn open(data_dir: &Path, max_receives: MaxReceives, clock: Arc<dyn Clock>) -> Result<Self, OpenError> {
        let dir_error = |source| OpenError::Dir { path: data_dir.to_owned(), source };
        std::fs::create_dir_all(data_dir).map_err(dir_error)?;
        let images = FsImageStore::open(data_dir).map_err(dir_error)?;
        let holder = Holder::register(data_dir).map_err(dir_error)?;
        let db = |name: &str| data_dir.join(name);
        let db_error = |name: &str| {
            let path = db(name);
            move |source| OpenError::Db { path, source }
        };
        let jobs = SqliteJobStore::open(&db("jobs.sqlite3")).map_err(db_error("jobs.sqlite3"))?;
        let queue =
            SqliteQueue::open(&db("queue.sqlite3"), max_receives, clock.clone()).map_err(db_error("queue.sqlite3"))?;
        let callbacks = SqliteQueue::open(&db("callbacks.sqlite3"), CALLBACK_RECEIVES, clock.clone())
            .map_err(db_error("callbacks.sqlite3"))?;
        let defaults = SqliteDefaultCallbacks::open(&db("owners.sqlite3")).map_err(db_error("owners.sqlite3"))?;
        let embedded = Self {
            images: Arc::new(images),
            jobs: Arc::new(jobs.held_by(holder.id())),
            queue: Arc::new(queue.held_by(holder.id())),
            callbacks: Arc::new(callbacks.held_by(holder.id())),
            defaults: Arc::new(defaults),
            holder: Arc::new(holder),
            data_dir: data_dir.to_owned(),
        };
        embedded.recover(data_dir, &*clock).await?;
        Ok(embedded)
    }

    /// Gives back the claims and messages of every holder whose process is gone.
    async fn recover(&self, data_dir: &Path, clock: &dyn Clock) -> Result<(), OpenError> {
        let recover_error = |source| OpenError::Recover { path: data_dir.to_owned(), source };
        let departed =
            Holder::departed(data_dir).map_err(|source| OpenError::Dir { path: data_dir.to_owned(), source })?;
        for holder in departed {
            let jobs = self.jobs.release_held_by(&holder.id, clock.now()).await.map_err(recover_error)?;
            let messages = self.queue.release_held_by(&holder.id).await.map_err(recover_error)?
                + self.callbacks.release_held_by(&holder.id).await.map_err(recover_error)?;
            if jobs + messages > 0 {
                info!(holder = %holder.id, jobs, messages, "gave back what a stopped process held");
            }
            holder.forget().map_err(|source| OpenError::Dir { path: data_dir.to_owned(), source })?;
        }
        Ok(())
    }

    /// The id this process is registered under.
    pub fn holder_id(&self) -> &str {
        self.holder.id()
    }

    /// The image and job stores, as the services take them.
    pub fn stores(&self) -> Stores {
        Stores { images: self.images.clone(), jobs: self.jobs.clone() }
    }

    /// Removes expired jobs with their images, then images older than `ttl` that no job points
    /// to any more (left by a failed submission or a failed delete).
    pub async fn sweep(&self, clock: &dyn Clock, ttl: Duration) -> Result<Swept, BackendError> {
        let mut swept = Swept::default();
        loop {
            let expired = self.jobs.delete_expired(clock.now(), 500).await?;
            for job in &expired {
                self.images.delete(&job.image.object_key).await?;
            }
            swept.jobs += expired.len();
            swept.images += expired.len();
            if expired.len() < 500 {
                break;
            }
        }
        // Orphans go by file age, with an hour's grace over the TTL so an image whose job is
        // still alive is never touched.
        let cutoff = SystemTime::from(clock.now()) - ttl - Duration::from_secs(3600);
        swept.images += self.images.remove_older_than(cutoff).await?;
        Ok(swept)
    }

    /// The callbacks' signing secrets kept in the data directory, created on first use.
    pub fn callback_secrets(data_dir: &Path) -> std::io::Result<WebhookSecrets> {
        let path = data_dir.join("callback-secrets");
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .parse()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secrets = WebhookSecrets::new(WebhookSecret::generate());
                match write_private(&path, &secrets.to_lines()) {
                    Ok(()) => {
                        info!(path = %path.display(), "created a signing secret for completion callbacks");
                        Ok(secrets)
                    }
                    // Another process sharing the directory created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::callback_secrets(data_dir),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub async fn queue_counts(&self) -> Result<QueueCounts, BackendError> {
        self.queue.counts().await
    }
}

/// Writes a file only its owner can read, atomically (a temporary file renamed into place).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist_noclobber(path).map_err(|e| e.error)?;
    Ok(())
}
