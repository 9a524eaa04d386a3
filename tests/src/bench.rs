//! What the benchmarks share: the server they start, and how they measure and print.

use std::sync::Arc;
use std::time::Duration;

use labelq::server::ServeOptions;
use labelq_shared::domain::OwnerId;
use labelq_shared::http::auth::OpenAccess;
use labelq_shared::http::events::LiveConfig;
use labelq_shared::service::{CallbackConfig, SubmitConfig, WorkerConfig};
use labelq_shared::webhooks::{RetrySchedule, TargetPolicy, WebhookSecret, WebhookSecrets};

/// What the benchmarks serve with: open access for one owner, default limits and schedules, the
/// given number of workers, on 127.0.0.1:0.
pub fn serve_options(workers: usize) -> ServeOptions {
    ServeOptions {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        workers,
        auth: Arc::new(OpenAccess::new(OwnerId::parse("bench").expect("an owner"))),
        submit: SubmitConfig::default(),
        worker: WorkerConfig::default(),
        poll_wait: Duration::from_secs(5),
        grace: Duration::from_secs(5),
        sweep_interval: Duration::from_secs(3600),
        callbacks: CallbackConfig {
            secrets: WebhookSecrets::new(WebhookSecret::generate()),
            policy: TargetPolicy::default(),
            schedule: RetrySchedule::default(),
        },
        deliverers: 1,
        live: LiveConfig::default(),
        drops: None,
        public_url: None,
    }
}

/// This process's peak resident set size so far (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// This process's CPU time so far, user and system.
pub fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The `p` quantile (0..=1) of samples sorted ascending; there must be at least one.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
