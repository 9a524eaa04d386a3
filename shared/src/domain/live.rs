//! Live connections held by a gateway rather than by us (API Gateway's WebSocket API): who is
//! connected, and what each connection follows. A connection lives at most
//! [`LiveConnection::MAX_LIFETIME`]; its record is kept a little longer, then expires.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use super::{InvalidId, JobId, OwnerId};

/// The gateway's name for a connection (API Gateway's `connectionId`, e.g. `L0SM9cOFvHcCIhw=`).
/// Only letters, digits and `=+/_-`: it becomes part of a management URL's path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(String);

impl ConnectionId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let invalid = |reason| InvalidId { kind: "connection id", reason };
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(invalid("longer than 128 bytes"));
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"=+/_-".contains(&b)) {
            return Err(invalid("not a gateway connection id"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a connection follows: some jobs, or every job of its owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Following {
    pub jobs: BTreeSet<JobId>,
    pub all: bool,
}

impl Following {
    pub fn includes(&self, job: &JobId) -> bool {
        self.all || self.jobs.contains(job)
    }

    /// Subscriptions held, all jobs counting as one.
    pub fn len(&self) -> usize {
        self.jobs.len() + usize::from(self.all)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConnection {
    pub id: ConnectionId,
    pub owner: OwnerId,
    pub following: Following,
    pub connected_at: OffsetDateTime,
    /// When the record may be removed: the gateway has closed the connection by then.
    pub expires_at: OffsetDateTime,
}

impl LiveConnection {
    /// API Gateway closes a WebSocket connection after two hours at most.
    pub const MAX_LIFETIME: Duration = Duration::from_secs(2 * 60 * 60);
    /// Kept past the lifetime, so a record never expires under a connection still open.
    const MARGIN: Duration = Duration::from_secs(10 * 60);

    pub fn opened(id: ConnectionId, owner: OwnerId, now: OffsetDateTime) -> Self {
        Self {
            id,
            owner,
            following: Following::default(),
            connected_at: now,
            expires_at: now + Self::MAX_LIFETIME + Self::MARGIN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_are_what_a_gateway_hands_out_and_nothing_that_could_leave_a_path() {
        assert!(ConnectionId::parse("L0SM9cOFvHcCIhw=").is_ok());
        assert!(ConnectionId::parse("a+b/c_d-e").is_ok());
        for bad in ["", "a b", "../x", "a?b", "ä", &"x".repeat(129)] {
            assert!(ConnectionId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn following_all_includes_every_job_and_counts_once() {
        let job = JobId::new();
        let mut following = Following::default();
        assert!(!following.includes(&job) && following.is_empty());
        following.all = true;
        assert!(following.includes(&job));
        following.jobs.insert(JobId::new());
        assert_eq!(following.len(), 2);
    }

    #[test]
    fn a_record_outlives_the_longest_connection() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let connection =
            LiveConnection::opened(ConnectionId::parse("abc=").unwrap(), OwnerId::parse("alice").unwrap(), now);
        assert!(connection.expires_at > now + LiveConnection::MAX_LIFETIME);
    }
}
