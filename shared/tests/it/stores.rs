//! The job store contract on the stores that run without AWS: the in-memory double the service
//! tests use, and SQLite on a real file. (DynamoDB keeps it in the LocalStack suite.)

use labelq_testkit::contract::job_store_contract;
use labelq_testkit::memory::MemoryJobs;

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
