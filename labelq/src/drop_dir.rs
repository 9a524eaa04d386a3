//! The drop directory of `labelq serve --watch DIR`: every image file that appears under `DIR`
//! becomes a job. When the job finishes, the worker writes its result as JSON under the results
//! directory ([`FsDropResults`]), at the file's relative path plus `.json`, for a submitter who
//! never calls the API; a file that cannot become a job gets its refusal written there at once.
//!
//! - **Only complete files count.** A file is taken once it has kept the same size and
//!   modification time for a whole scan interval. Names starting with `.` and the temporary names
//!   of common downloaders and copiers (`*.part`, `*.tmp`, `*.partial`, `*.crdownload`, `*~`) are
//!   never taken: write elsewhere (or under such a name) and rename the file in.
//! - **Once, across restarts.** A file's job is found by an idempotency key made of its relative
//!   path, size and modification time ([`drop_idempotency_key`]), so taking it again after a
//!   restart (its result not written yet) answers the same job. A file whose result is newer
//!   than itself is done and never read again; a file replaced by another (a new modification
//!   time) is a new job.
//! - **Nothing it writes is watched.** The results directory may not be inside the drop directory,
//!   and symbolic links are not followed.
//!
//! The directory is scanned, not watched with inotify: portable, and nothing is missed while the
//! server is down. A scan stats every file, which is cheap for the thousands a drop directory holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use labelq_shared::adapters::fs::FsDropResults;
use labelq_shared::domain::{
    ContentType, CorrelationId, DropKey, DropOwner, ImageRejection, JobSource, drop_idempotency_key,
};
use labelq_shared::http::problem::ApiError;
use labelq_shared::http::views::drop_refusal;
use labelq_shared::ports::DropResults;
use labelq_shared::service::{SubmitError, SubmitRequest, SubmitService, Upload};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Names that writers use while a file is incomplete.
const PARTIAL_SUFFIXES: [&str; 5] = [".part", ".partial", ".tmp", ".crdownload", "~"];

#[derive(Debug, Clone)]
pub struct DropConfig {
    /// The directory watched for drops.
    pub dir: PathBuf,
    /// Where results are written; not inside `dir`.
    pub results: PathBuf,
    pub owner: DropOwner,
    /// How often `dir` is scanned, and how long a file must stay unchanged to be taken.
    pub interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DropConfigError {
    #[error("the drop directory {0} cannot be used: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("the results directory {results} is inside the drop directory {dir}: its results would be dropped again")]
    ResultsInside { results: PathBuf, dir: PathBuf },
}

impl DropConfig {
    /// Creates both directories if needed and checks that results are not written where drops
    /// are taken from.
    pub fn prepare(&self) -> Result<(), DropConfigError> {
        for dir in [&self.dir, &self.results] {
            std::fs::create_dir_all(dir).map_err(|e| DropConfigError::Dir(dir.clone(), e))?;
        }
        let canonical = |dir: &PathBuf| dir.canonicalize().map_err(|e| DropConfigError::Dir(dir.clone(), e));
        let (dir, results) = (canonical(&self.dir)?, canonical(&self.results)?);
        if results.starts_with(&dir) {
            return Err(DropConfigError::ResultsInside { results, dir });
        }
        Ok(())
    }
}

/// A file's version as the scan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    size: u64,
    modified: SystemTime,
}

impl Version {
    fn tag(&self) -> String {
        let nanos = self.modified.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{}-{nanos}", self.size)
    }
}

/// Where a file is on its way to a result.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Seen at this version in the last scan; taken if the next scan sees it unchanged.
    Settling,
    /// Taken: its job is recorded (the worker writes the result), or its refusal is written.
    Done,
}

#[derive(Debug)]
struct Tracked {
    version: Version,
    stage: Stage,
}

/// A file the scan found.
#[derive(Debug)]
struct Found {
    key: DropKey,
    path: PathBuf,
    version: Version,
}

/// The drop directory's watcher: scans, submits, and writes refusals.
#[derive(Debug)]
pub struct DropDir {
    config: DropConfig,
    submit: Arc<SubmitService>,
    results: FsDropResults,
    tracked: HashMap<DropKey, Tracked>,
}

impl DropDir {
    /// `submit` should take images as large as drops may be; its limits decide what is refused.
    /// The worker should write results to [`results`](DropConfig::results) too.
    pub fn new(config: DropConfig, submit: Arc<SubmitService>) -> Self {
        let results = FsDropResults::new(&config.results);
        Self { config, submit, results, tracked: HashMap::new() }
    }

    /// Scans every `interval` until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        info!(dir = %self.config.dir.display(), results = %self.config.results.display(), "watching for drops");
        loop {
            self.scan_once().await;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    /// One scan: takes the files that settled.
    pub async fn scan_once(&mut self) {
        let dir = self.config.dir.clone();
        let found = match tokio::task::spawn_blocking(move || scan(&dir)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                warn!(error = %e, dir = %self.config.dir.display(), "cannot scan the drop directory");
                return;
            }
            Err(e) => {
                warn!(error = %e, "the drop directory scan did not finish");
                return;
            }
        };
        let present: std::collections::HashSet<DropKey> = found.iter().map(|f| f.key.clone()).collect();
        self.tracked.retain(|key, _| present.contains(key));
        for file in found {
            self.advance(file).await;
        }
    }

    async fn advance(&mut self, file: Found) {
        let stage = match self.tracked.get(&file.key) {
            Some(tracked) if tracked.version == file.version => tracked.stage.clone(),
            // New, or changed since the last scan: wait for it to settle, unless it is done.
            _ => {
                let stage = if self.result_is_current(&file) { Stage::Done } else { Stage::Settling };
                self.tracked.insert(file.key.clone(), Tracked { version: file.version, stage });
                return;
            }
        };
        let next = match stage {
            Stage::Done => return,
            Stage::Settling => self.take(&file).await,
        };
        if let Some(tracked) = self.tracked.get_mut(&file.key) {
            tracked.stage = next;
        }
    }

    /// Whether the file's result was written after the file itself was last changed.
    fn result_is_current(&self, file: &Found) -> bool {
        let result = std::fs::metadata(self.results.path(&file.key)).and_then(|m| m.modified());
        result.is_ok_and(|written| written >= file.version.modified)
    }

    /// Submits a settled file; the stage it is in afterwards.
    async fn take(&self, file: &Found) -> Stage {
        let source = JobSource::Drop { key: file.key.clone() };
        let owner = match self.config.owner.owner_of(&file.key) {
            Ok(owner) => owner,
            Err(e) => {
                warn!(key = %file.key, error = %e, "a drop with no owner is not taken");
                let detail = format!("{e}: drops are taken only under an owner's directory");
                return self.refuse(file, ApiError::bad_request("drop-without-owner", detail)).await;
            }
        };
        let max = self.submit.limits().max_bytes as u64;
        if file.version.size > max {
            let rejection = ImageRejection::TooLarge { size: file.version.size as usize, max: max as usize };
            return self.refuse(file, rejection.into()).await;
        }
        let bytes = match tokio::fs::read(&file.path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(key = %file.key, error = %e, "cannot read a drop; trying again next scan");
                return Stage::Settling;
            }
        };
        if bytes.len() as u64 != file.version.size {
            debug!(key = %file.key, "the drop changed while it was read; waiting for it to settle");
            return Stage::Settling;
        }
        let Some(declared) = ContentType::sniff(&bytes) else {
            return self.refuse(file, ImageRejection::NotAnImage.into()).await;
        };
        let request = SubmitRequest {
            owner,
            upload: Upload { bytes: bytes.into(), declared },
            idempotency_key: Some(drop_idempotency_key(&file.key, &file.version.tag())),
            correlation_id: CorrelationId::new(),
            callback: None,
            source: Some(source),
        };
        match self.submit.submit(request).await {
            Ok(submission) => {
                info!(key = %file.key, job_id = %submission.job.id, replayed = submission.replayed, "drop taken");
                Stage::Done
            }
            Err(SubmitError::Backend(e)) => {
                warn!(key = %file.key, error = %e, cause = ?e, "cannot take a drop now; trying again next scan");
                Stage::Settling
            }
            Err(refused) => {
                let error = ApiError::from(refused);
                info!(key = %file.key, refused = %error, "drop refused");
                self.refuse(file, error).await
            }
        }
    }

    /// A drop that never becomes a job still gets a result: why it was refused. If that cannot
    /// be written, the file is taken again next scan.
    async fn refuse(&self, file: &Found, error: ApiError) -> Stage {
        match self.results.write(&file.key, &drop_refusal(&file.key, &error.problem())).await {
            Ok(()) => Stage::Done,
            Err(e) => {
                warn!(key = %file.key, error = %e, "cannot write a drop's refusal; trying again next scan");
                Stage::Settling
            }
        }
    }
}

/// Every regular file under `dir` that may be a drop, with its key and version.
fn scan(dir: &Path) -> std::io::Result<Vec<Found>> {
    let mut found = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = pending.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            // The root must be readable; a subdirectory that vanished mid-scan is just gone.
            Err(e) if path == dir => return Err(e),
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                debug!(name = ?entry.file_name(), "a drop whose name is not UTF-8 is not taken");
                continue;
            };
            if name.starts_with('.') || PARTIAL_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                continue;
            }
            // `file_type` does not follow symbolic links: a link is neither a file nor a directory.
            let Ok(kind) = entry.file_type() else { continue };
            let key = format!("{prefix}{name}");
            if kind.is_dir() {
                pending.push((entry.path(), format!("{key}/")));
            } else if kind.is_file() {
                let Ok(meta) = entry.metadata() else { continue };
                let Ok(modified) = meta.modified() else { continue };
                match DropKey::parse(&key) {
                    Ok(key) => {
                        found.push(Found { key, path: entry.path(), version: Version { size: meta.len(), modified } })
                    }
                    Err(e) => debug!(%key, error = %e, "not a key a drop can have"),
                }
            }
        }
    }
    Ok(found)
}
