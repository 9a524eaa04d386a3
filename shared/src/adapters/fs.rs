//! [`FsImageStore`]: images as files in a directory, for `labelq serve`; [`FsDroppedObjects`] and
//! [`FsDropResults`]: dropped images, and their results as JSON, as the files of directories.
//!
//! A put is crash-safe: the bytes go to a temporary file that is fsync'd, renamed into place, and
//! the directory is fsync'd, so after `put` returns the image survives a power cut and a reader
//! never sees half a file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use crate::domain::{DropKey, ObjectKey};
use crate::ports::{BackendError, DropResults, DroppedObjects, ImageStore, StoredImage};

#[derive(Debug, Clone)]
pub struct FsImageStore {
    root: PathBuf,
}

impl FsImageStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("images"))?;
        fs::create_dir_all(root.join("uploads"))?;
        fs::create_dir_all(root.join("tmp"))?;
        Ok(Self { root })
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        // Keys are `images/{uuid}` by construction (`ObjectKey` refuses anything else), so the
        // joined path stays under the root.
        self.root.join(key.as_str())
    }

    /// A new temporary file for bytes that arrive in pieces (a direct upload), to be made the image
    /// under a key with [`adopt`](Self::adopt) once all of it is there and checked. One left behind
    /// by a crash is removed by expiry.
    pub async fn staging(&self) -> Result<(PathBuf, tokio::fs::File), BackendError> {
        let path = self.root.join("tmp").join(format!(".upload-{}", Uuid::new_v4().simple()));
        let file = tokio::fs::File::create(&path).await.map_err(|e| BackendError::transient("stage an upload", e))?;
        Ok((path, file))
    }

    /// Makes the staged file `staged` the image under `key` unless there is one already (the
    /// first complete upload stays; a later one never replaces what a worker may have checked),
    /// durably: the bytes and the name survive a power cut, and a reader never sees half of them.
    /// Whether it became the image; the staged file is gone either way.
    pub async fn adopt(&self, staged: PathBuf, key: &ObjectKey) -> Result<bool, BackendError> {
        let target = self.path(key);
        blocking("store an upload", move || {
            let result = (|| {
                File::open(&staged)?.sync_all()?;
                // A link, unlike a rename, never replaces an existing name.
                match fs::hard_link(&staged, &target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
                    Err(e) => return Err(e),
                }
                File::open(target.parent().unwrap_or(Path::new(".")))?.sync_all()?;
                Ok(true)
            })();
            let _ = fs::remove_file(&staged);
            result
        })
        .await
    }

    /// Removes images (and abandoned temporary files) last modified before `cutoff`; returns how
    /// many images went. Expiry calls this to clear images whose job is gone.
    pub async fn remove_older_than(&self, cutoff: SystemTime) -> Result<usize, BackendError> {
        let root = self.root.clone();
        blocking("remove expired images", move || {
            let _ = remove_older_than(&root.join("tmp"), cutoff);
            Ok(remove_older_than(&root.join("images"), cutoff)? + remove_older_than(&root.join("uploads"), cutoff)?)
        })
        .await
    }
}

fn remove_older_than(dir: &Path, cutoff: SystemTime) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let modified = entry.metadata()?.modified()?;
        if modified < cutoff {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

async fn blocking<T: Send + 'static>(
    operation: &'static str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::transient(operation, e))?
        .map_err(|e| BackendError::transient(operation, e))
}

fn write_durably(tmp_dir: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_dir.join(format!(".tmp-{}", Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, target)?;
        // The rename is only durable once the directory entry is.
        File::open(target.parent().unwrap_or(Path::new(".")))?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The results of drops, each at the drop's key under `root` plus `.json`
/// (`alice/cat.jpg` -> `ROOT/alice/cat.jpg.json`), written as crash-safely as an image.
#[derive(Debug, Clone)]
pub struct FsDropResults {
    root: PathBuf,
}

impl FsDropResults {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where the result of the drop under `key` is written.
    pub fn path(&self, key: &DropKey) -> PathBuf {
        // A key's segments are never empty, `.` or `..` (`DropKey` refuses them): the path stays
        // under the root.
        let mut path = self.root.clone();
        for segment in key.segments() {
            path.push(segment);
        }
        let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".json");
        path.set_file_name(name);
        path
    }
}

/// Drops as the files of a directory, each at its key under `root`.
#[derive(Debug, Clone)]
pub struct FsDroppedObjects {
    root: PathBuf,
}

impl FsDroppedObjects {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

#[async_trait]
impl DroppedObjects for FsDroppedObjects {
    /// A file has no ETag: `etag` is not checked (the caller compares the size it saw).
    async fn get(&self, key: &DropKey, max: u64, _etag: Option<&str>) -> Result<Option<Bytes>, BackendError> {
        let mut path = self.root.clone();
        path.extend(key.segments());
        blocking("read a drop", move || {
            // A symbolic link is not a drop: it could lead anywhere.
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
            read_at_most(&path, max)
        })
        .await
    }
}

#[async_trait]
impl DropResults for FsDropResults {
    async fn write(&self, key: &DropKey, json: &[u8]) -> Result<(), BackendError> {
        let target = self.path(key);
        let json = json.to_vec();
        blocking("write a drop's result", move || {
            let dir = target.parent().unwrap_or(Path::new(".")).to_path_buf();
            fs::create_dir_all(&dir)?;
            // The temporary file is beside its target, so the rename stays on one file system.
            write_durably(&dir, &target, &json)
        })
        .await
    }
}

/// The first `max` + 1 bytes of the file at most, `None` if there is none.
fn read_at_most(path: &Path, max: u64) -> io::Result<Option<Bytes>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, max.saturating_add(1)), &mut bytes)?;
    Ok(Some(Bytes::from(bytes)))
}

#[async_trait]
impl ImageStore for FsImageStore {
    async fn put(&self, key: &ObjectKey, image: &StoredImage) -> Result<(), BackendError> {
        let target = self.path(key);
        let tmp_dir = self.root.join("tmp");
        let bytes = image.bytes.clone();
        blocking("store image", move || write_durably(&tmp_dir, &target, &bytes)).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, BackendError> {
        let path = self.path(key);
        blocking("read image", move || match fs::read(path) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn get_at_most(&self, key: &ObjectKey, max: u64) -> Result<Option<Bytes>, BackendError> {
        let path = self.path(key);
        blocking("read image", move || read_at_most(&path, max)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        let path = self.path(key);
        blocking("delete image", move || match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ContentType, JobId, OwnerId};

    fn image(bytes: &'static [u8]) -> StoredImage {
        StoredImage {
            bytes: Bytes::from_static(bytes),
            content_type: ContentType::Png,
            owner: OwnerId::parse("alice").unwrap(),
            sha256: String::new(),
        }
    }

    #[tokio::test]
    async fn put_get_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsImageStore::open(dir.path()).unwrap();
        let key = ObjectKey::for_image(&JobId::new());
        assert_eq!(store.get(&key).await.unwrap(), None);
        store.put(&key, &image(b"pixels")).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().as_deref(), Some(&b"pixels"[..]));
        store.delete(&key).await.unwrap();
        store.delete(&key).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), None);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temporary files left");
    }

    #[tokio::test]
    async fn removes_only_images_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsImageStore::open(dir.path()).unwrap();
        let key = ObjectKey::for_image(&JobId::new());
        store.put(&key, &image(b"old")).await.unwrap();
        let before = SystemTime::now() - std::time::Duration::from_secs(60);
        assert_eq!(store.remove_older_than(before).await.unwrap(), 0);
        let after = SystemTime::now() + std::time::Duration::from_secs(1);
        assert_eq!(store.remove_older_than(after).await.unwrap(), 1);
        assert_eq!(store.get(&key).await.unwrap(), None);
    }
}
