//! The threads inference runs on: as many as the detector has session sets, started once, each at
//! a lower scheduling priority (a higher nice value) than the rest of the process.
//!
//! Inference is the one CPU-bound thing `labelq serve` does, and it can keep every core busy for
//! as long as there is a backlog. On threads of its own, niced, it yields the CPU to the HTTP
//! API's threads whenever they have work, so a submission is answered in milliseconds however busy
//! the models are, and the models still get every cycle the API leaves (the nice value weighs the
//! share under contention; an idle API takes nothing). On tokio's blocking pool it could not be
//! niced: those threads also run the API's file and SQLite writes, and a thread cannot raise its
//! priority back without privileges.
//!
//! A job that panics (a decoder bug on one image) is caught: its caller gets an error and the
//! thread goes on with the next job.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of niced threads running jobs in the order they were handed over.
#[derive(Debug)]
pub struct InferenceThreads {
    jobs: Sender<Job>,
}

impl InferenceThreads {
    /// Starts `count` threads at nice value `nice`, or the process's if that is higher already (0
    /// keeps the process's priority; a value the process may not set is logged and ignored).
    pub fn start(count: usize, nice: i32) -> std::io::Result<Self> {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..count.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("labelq-inference-{index}"))
                .spawn(move || run(&receiver, nice))?;
        }
        Ok(Self { jobs: sender })
    }

    /// Hands a job to the next free thread. Fails only if every thread is gone.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), &'static str> {
        self.jobs.send(Box::new(job)).map_err(|_| "the inference threads have stopped")
    }
}

fn run(receiver: &Mutex<Receiver<Job>>, nice: i32) {
    lower_priority(nice);
    loop {
        // Hold the lock only to take one job, not while running it.
        let job = match receiver.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // The job's own reply channel is dropped with it on a panic: its caller sees that.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// Sets this thread's nice value. On Linux the nice value is per thread, so `setpriority` on the
/// thread's own id changes this thread only.
fn lower_priority(nice: i32) {
    if nice <= current_nice() {
        return;
    }
    // SAFETY: gettid and setpriority take no pointers and cannot break memory safety.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(nice, error = %error, "could not lower the inference thread's priority");
    }
}

/// This thread's nice value.
pub fn current_nice() -> i32 {
    // SAFETY: as above.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_niced_threads_and_a_panic_does_not_stop_them() {
        let threads = InferenceThreads::start(1, 7).unwrap();
        let (tx, rx) = channel();
        let first = tx.clone();
        threads.submit(move || first.send(current_nice()).unwrap()).unwrap();
        let base = current_nice();
        assert_eq!(rx.recv().unwrap(), base.max(7));
        threads.submit(|| panic!("a decoder bug")).unwrap();
        threads.submit(move || tx.send(-100).unwrap()).unwrap();
        assert_eq!(rx.recv().unwrap(), -100, "the thread survived the panic");
    }
}
