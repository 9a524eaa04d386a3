//! Who holds what in a data directory that `labelq serve` processes share.
//!
//! Each process that opens the embedded stores registers as a [`Holder`]: a file
//! `holders/{id}` it keeps locked for as long as it runs. The queue records the holder on every
//! message it hands out, the job store on every claim. The lock is the kernel's, so it goes with
//! the process however the process ends, a SIGKILL included. On start, a process can therefore
//! tell the holders that are gone (their file can be locked) from the live ones (it cannot), and
//! give back what the gone ones held at once, instead of letting their jobs wait out the lease and
//! their messages the visibility timeout. A live process sharing the directory keeps its leases.
//!
//! A process leaves its registration behind however it ends; the next process to open the
//! directory gives back what it still held (nothing, after a clean stop) and removes it. A
//! registration is never removed on drop: a process dropping its stores with claims still held
//! (a panic, say) is then recovered like one that was killed.

use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

const DIR: &str = "holders";

/// This process's registration in a data directory, held (locked) while this value lives.
#[derive(Debug)]
pub struct Holder {
    id: String,
    // Kept open: the lock lives as long as this file handle.
    _file: File,
}

impl Holder {
    /// Registers a new holder under `data_dir/holders/`.
    pub fn register(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join(DIR);
        fs::create_dir_all(&dir)?;
        let id = Uuid::new_v4().simple().to_string();
        // Locked before it appears under its name, so that nobody can take a fresh registration
        // for a departed one in between.
        let staging = dir.join(format!(".{id}.new"));
        let file = File::create(&staging)?;
        file.lock()?;
        fs::rename(&staging, dir.join(&id))?;
        Ok(Self { id, _file: file })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The holders registered under `data_dir` whose process is gone, each locked by this call
    /// so that two processes starting at once do not both recover it.
    pub fn departed(data_dir: &Path) -> io::Result<Vec<Departed>> {
        let dir = data_dir.join(DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut departed = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if id.starts_with('.') {
                // A registration that never completed (its process died between create and
                // rename): it held nothing.
                let _ = remove_if_unlocked(&entry.path());
                continue;
            }
            let file = match File::open(entry.path()) {
                Ok(file) => file,
                // Recovered and removed by another process meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match file.try_lock() {
                Ok(()) => departed.push(Departed { id, path: entry.path(), _file: file }),
                Err(TryLockError::WouldBlock) => {} // alive (or being recovered right now)
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(departed)
    }
}

/// A holder whose process is gone, locked by the process recovering it.
#[derive(Debug)]
pub struct Departed {
    pub id: String,
    path: PathBuf,
    _file: File,
}

impl Departed {
    /// Removes the registration once what it held has been given back.
    pub fn forget(self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn remove_if_unlocked(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    if file.try_lock().is_ok() {
        fs::remove_file(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_holder_is_not_departed_and_a_dropped_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let live = Holder::register(dir.path()).unwrap();
        let id = live.id().to_owned();
        assert!(Holder::departed(dir.path()).unwrap().is_empty(), "a live holder's lock is held");
        drop(live);
        let departed = Holder::departed(dir.path()).unwrap();
        assert_eq!(departed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
        for holder in departed {
            holder.forget().unwrap();
        }
        assert_eq!(fs::read_dir(dir.path().join(DIR)).unwrap().count(), 0);
    }

    #[test]
    fn a_holder_whose_lock_is_gone_is_departed_once() {
        let dir = tempfile::tempdir().unwrap();
        let _live = Holder::register(dir.path()).unwrap();
        // What a SIGKILL leaves behind: the registration, with nobody holding its lock.
        let path = dir.path().join(DIR).join("0123456789abcdef");
        fs::write(&path, b"").unwrap();

        let found = Holder::departed(dir.path()).unwrap();
        assert_eq!(found.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["0123456789abcdef"]);
        assert!(Holder::departed(dir.path()).unwrap().is_empty(), "locked by the one recovering it");
        for departed in found {
            departed.forget().unwrap();
        }
        assert!(!path.exists());
    }
}
