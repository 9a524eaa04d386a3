//! The drop directory of `labelq serve --watch DIR`: every image file that appears under `DIR`
//! becomes a job, through the same [`DropIntake`] as drops into the bucket on AWS. When the job
//! finishes, the worker writes its result as JSON under the results directory
//! ([`FsDropResults`]), at the file's relative path plus `.json`, for a submitter who never calls
//! the API; a file that cannot become a job gets its refusal written there at once.
//!
//! - **Only complete files count.** A file is taken once it has kept the same size, modification
//!   time and inode for a whole scan interval. Names starting with `.` and the temporary names of
//!   common downloaders and copiers (`*.part`, `*.tmp`, `*.partial`, `*.crdownload`, `*~`) are
//!   never taken: write elsewhere (or under such a name) and rename the file in.
//! - **Once, across restarts.** A file's version is its size, modification time and inode; its job
//!   is found by an idempotency key of its path and version, so taking it again after a restart
//!   (its result not written yet) answers the same job. A file whose result names its version is
//!   done and never read again; another version under the same name (rewritten, or another file
//!   renamed over it, whatever its modification time) is a new job.
//! - **Nothing it writes is watched.** The results directory and the drop directory may not
//!   overlap, nor may the drop directory contain the data directory; symbolic links are neither
//!   followed by the scan nor read.
//! - **A failing drop backs off**: a take that fails (a store, the queue) is tried again after
//!   one interval, then two, four, ... up to 5 minutes, with one warning per version.
//!
//! The directory is scanned, not watched with inotify: portable, and nothing is missed while the
//! server is down. A scan stats every file, which is cheap for the thousands a drop directory holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use labelq_shared::adapters::fs::{FsDropResults, FsDroppedObjects};
use labelq_shared::domain::{DropKey, DropOwner};
use labelq_shared::service::{DropIntake, Dropped, SubmitService, Taken};
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
    /// Where the server keeps its own files (images among them), which `dir` may not contain.
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DropConfigError {
    #[error("{0} cannot be used: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("the results directory {results} and the drop directory {dir} overlap: results would be taken as drops")]
    ResultsOverlap { results: PathBuf, dir: PathBuf },
    #[error("the drop directory {dir} contains the data directory {data_dir}: its images would be taken as drops")]
    DataInside { data_dir: PathBuf, dir: PathBuf },
}

impl DropConfig {
    /// Creates the directories if needed and checks that nothing labelq writes is inside the
    /// drop directory, so that nothing it writes is taken as a drop.
    pub fn prepare(&self) -> Result<(), DropConfigError> {
        let canonical = |dir: &PathBuf| {
            std::fs::create_dir_all(dir)
                .and_then(|()| dir.canonicalize())
                .map_err(|e| DropConfigError::Dir(dir.clone(), e))
        };
        let (dir, results) = (canonical(&self.dir)?, canonical(&self.results)?);
        if results.starts_with(&dir) || dir.starts_with(&results) {
            return Err(DropConfigError::ResultsOverlap { results, dir });
        }
        if let Some(data_dir) = &self.data_dir {
            let data_dir = canonical(data_dir)?;
            if data_dir.starts_with(&dir) {
                return Err(DropConfigError::DataInside { data_dir, dir });
            }
        }
        Ok(())
    }
}

/// A file's version as the scan sees it: another file renamed over it has another inode, a file
/// rewritten in place another modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    size: u64,
    modified: SystemTime,
    inode: u64,
}

impl Version {
    fn of(meta: &std::fs::Metadata) -> Option<Self> {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self { size: meta.len(), modified: meta.modified().ok()?, inode })
    }

    /// The version as the job's source records it: `size-mtime_ns-inode`.
    fn tag(&self) -> String {
        let nanos = self.modified.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{}-{nanos}-{}", self.size, self.inode)
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
    /// Takes of this version that failed in a row, and when the next may be tried.
    failures: u32,
    retry_at: Option<Instant>,
}

/// The longest wait between takes of a drop that keeps failing.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);

/// A file the scan found.
#[derive(Debug)]
struct Found {
    key: DropKey,
    version: Version,
}

/// The drop directory's watcher: scans, and hands the files that settled to the intake.
#[derive(Debug)]
pub struct DropDir {
    config: DropConfig,
    intake: DropIntake,
    results: FsDropResults,
    tracked: HashMap<DropKey, Tracked>,
}

impl DropDir {
    /// Drops are submitted through `submit`, whose limits decide what is refused (give it
    /// [`MAX_DROP_BYTES`](labelq_shared::domain::MAX_DROP_BYTES)). The worker should write results
    /// to [`results`](DropConfig::results) too.
    pub fn new(config: DropConfig, submit: Arc<SubmitService>) -> Self {
        let results = FsDropResults::new(&config.results);
        let objects = Arc::new(FsDroppedObjects::new(&config.dir));
        let intake = DropIntake::new(submit, objects, Arc::new(results.clone()), config.owner.clone());
        Self { config, intake, results, tracked: HashMap::new() }
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
        let failures = match self.tracked.get(&file.key) {
            Some(tracked) if tracked.version == file.version => match tracked.stage {
                Stage::Done => return,
                Stage::Settling if tracked.retry_at.is_some_and(|at| Instant::now() < at) => return,
                Stage::Settling => tracked.failures,
            },
            // New, or changed since the last scan: wait for it to settle, unless it is done.
            _ => {
                let stage = if self.result_is_current(&file).await { Stage::Done } else { Stage::Settling };
                let tracked = Tracked { version: file.version, stage, failures: 0, retry_at: None };
                self.tracked.insert(file.key.clone(), tracked);
                return;
            }
        };
        let next = self.take(&file, failures).await;
        if let Some(tracked) = self.tracked.get_mut(&file.key) {
            match next {
                Ok(stage) => (tracked.stage, tracked.failures, tracked.retry_at) = (stage, 0, None),
                Err(()) => {
                    tracked.failures = failures + 1;
                    let wait = self.config.interval.saturating_mul(1 << failures.min(16)).min(MAX_RETRY_WAIT);
                    tracked.retry_at = Some(Instant::now() + wait);
                }
            }
        }
    }

    /// Whether the result beside the file is this version's (a file replaced by another, even
    /// one with an older modification time, is not done).
    async fn result_is_current(&self, file: &Found) -> bool {
        let Ok(bytes) = tokio::fs::read(self.results.path(&file.key)).await else {
            return false;
        };
        let result: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        result["source"]["version"].as_str() == Some(file.version.tag().as_str())
    }

    /// Takes a settled file: the stage it is in afterwards, or `Err` to try again later. Only
    /// the first failure of a version is a warning.
    async fn take(&self, file: &Found, failures: u32) -> Result<Stage, ()> {
        let dropped =
            Dropped { key: file.key.clone(), version: file.version.tag(), size: file.version.size, etag: None };
        match self.intake.take(&dropped).await {
            Ok(Taken::Job { .. } | Taken::Refused | Taken::Gone) => Ok(Stage::Done),
            Ok(Taken::Changed) => Ok(Stage::Settling),
            Err(e) if failures == 0 => {
                warn!(key = %file.key, error = %e, cause = ?e, "cannot take a drop now; trying again later");
                Err(())
            }
            Err(e) => {
                debug!(key = %file.key, error = %e, failures, "still cannot take a drop");
                Err(())
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
                let Some(version) = entry.metadata().ok().as_ref().and_then(Version::of) else { continue };
                match DropKey::parse(&key) {
                    Ok(key) => found.push(Found { key, version }),
                    Err(e) => debug!(%key, error = %e, "not a key a drop can have"),
                }
            }
        }
    }
    Ok(found)
}
