//! The job store contract on the SQLite adapter, on a real database file.

use labelq_e2e::contract::job_store_contract;
use labelq_shared::adapters::sqlite::SqliteJobStore;

#[tokio::test]
async fn the_sqlite_job_store_keeps_the_job_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteJobStore::open(&dir.path().join("jobs.sqlite3")).unwrap();
    job_store_contract(&store).await;
}
