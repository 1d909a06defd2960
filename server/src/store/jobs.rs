//! Job records: one per background job, rewritten as the job progresses.

use super::{id_key, JobRecord, Store, StoreError};

impl Store {
    pub fn job(&self, id: u64) -> Result<Option<JobRecord>, StoreError> {
        self.jobs.get(&id_key(id))
    }

    pub fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        self.jobs.put(&id_key(job.id), job)
    }

    /// Every job record, in id order.
    pub fn all_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.jobs.scan_from::<JobRecord>(&id_key(0)).map(|item| Ok(item?.1)).collect()
    }
}
