//! The image store, job store and default callback contracts on the stores that run without AWS: the in-memory double the service
//! tests use, and SQLite on a real file. (DynamoDB keeps it in the LocalStack suite.)

use labelq_testkit::contract::{default_callbacks_contract, image_store_contract, job_store_contract};
use labelq_testkit::memory::{MemoryDefaultCallbacks, MemoryImages, MemoryJobs};

#[tokio::test]
async fn the_in_memory_image_store_keeps_the_image_store_contract() {
    image_store_contract(&MemoryImages::default()).await;
}

#[cfg(feature = "embedded")]
#[tokio::test]
async fn the_file_image_store_keeps_the_image_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    image_store_contract(&labelq_shared::adapters::fs::FsImageStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn the_in_memory_job_store_keeps_the_job_store_contract() {
    job_store_contract(&MemoryJobs::default()).await;
}

#[cfg(feature = "embedded")]
#[tokio::test]
async fn the_sqlite_job_store_keeps_the_job_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = labelq_shared::adapters::sqlite::SqliteJobStore::open(&dir.path().join("jobs.sqlite3")).unwrap();
    job_store_contract(&store).await;
}

#[tokio::test]
async fn the_in_memory_default_callbacks_keep_their_contract() {
    default_callbacks_contract(&MemoryDefaultCallbacks::default()).await;
}

#[cfg(feature = "embedded")]
#[tokio::test]
async fn the_sqlite_default_callbacks_keep_their_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("owners.sqlite3");
    let store = labelq_shared::adapters::sqlite::SqliteDefaultCallbacks::open(&path).unwrap();
    default_callbacks_contract(&store).await;
}
