//! Live push where a gateway holds the connections (API Gateway's WebSocket API), with the same
//! protocol as `labelq serve`'s `GET /v1/live` ([`super::live_protocol`]).
//!
//! No process stays with a connection: each event (a connection opened, a client message, a
//! connection closed, a job finished) is one call of [`SocketRelay`], and what a connection
//! follows lives in a [`LiveConnections`] store between calls. Messages go out through a
//! [`LiveSender`], and a connection the gateway reports gone is forgotten at once.
//!
//! What it pushes is what the completion topic announces: each job's final state. A subscriber
//! to one job gets its current state at once (the final one, if it has finished), then the final
//! state when it comes, then `unsubscribed` with reason `finished`. Subscribing records the
//! subscription *before* reading the job, so a job that finishes in between is sent twice
//! (clients keep the highest `version`) rather than not at all, provided the push sees the
//! subscription: a store whose lookup by owner lags behind its writes (DynamoDB's index) needs
//! the pushes held back by more than that lag (the live queue's delay).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use tracing::{Instrument, debug, info_span, warn};

use super::live_protocol::{EndReason, LiveMessage, LiveRequest};
use super::problem::ApiError;
use super::websocket::MAX_SUBSCRIPTIONS;
use crate::domain::{Clock, ConnectionId, Job, JobId, LiveConnection, Message, OwnerId};
use crate::ports::{BackendError, Delivery, Followed, LiveConnections, LiveSender, SendError};
use crate::service::{Disposition, QueryError, QueryService, Stores};

/// Messages sent at once when a finished job is pushed.
const FAN_OUT: usize = 16;

fn too_many(job: Option<JobId>) -> Utf8Bytes {
    let error = ApiError::bad_request(
        "too-many-subscriptions",
        format!("a connection holds at most {MAX_SUBSCRIPTIONS} subscriptions; unsubscribe first"),
    );
    LiveMessage::error(job, &error)
}

/// Live push through a gateway: connect, message, disconnect, and pushing finished jobs.
#[derive(Debug, Clone)]
pub struct SocketRelay {
    connections: Arc<dyn LiveConnections>,
    sender: Arc<dyn LiveSender>,
    query: QueryService,
    clock: Arc<dyn Clock>,
}

/// What a push reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    pub sent: usize,
    /// Connections the gateway reported closed, now forgotten.
    pub gone: usize,
}

impl SocketRelay {
    pub fn new(
        connections: Arc<dyn LiveConnections>,
        sender: Arc<dyn LiveSender>,
        stores: Stores,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { connections, sender, query: QueryService::new(stores, clock.clone()), clock }
    }

    /// Records a connection the gateway is opening for `owner`, whose token was checked.
    pub async fn connect(&self, id: ConnectionId, owner: OwnerId) -> Result<(), BackendError> {
        debug!(connection = %id, %owner, "live connection opened");
        self.connections.open(&LiveConnection::opened(id, owner, self.clock.now())).await
    }

    /// Forgets a connection the gateway closed.
    pub async fn disconnect(&self, id: &ConnectionId) -> Result<(), BackendError> {
        debug!(connection = %id, "live connection closed");
        self.connections.close(id).await
    }

    /// Acts on one client message and sends the replies. A message the protocol does not know is
    /// answered with an `error` message, as on `labelq serve`; only a backend failure is an error
    /// here (the gateway then tells the client nothing, and it may send again).
    pub async fn message(&self, id: &ConnectionId, text: &str) -> Result<(), BackendError> {
        let Some(connection) = self.connections.get(id).await? else {
            // Expired or never recorded: the client must connect again to be known.
            let error = ApiError::Unauthorized("the connection is not known; connect again");
            return self.reply(id, &[LiveMessage::error(None, &error)]).await;
        };
        let replies = match serde_json::from_str::<LiveRequest>(text) {
            Err(e) => {
                let error = ApiError::bad_request("bad-message", format!("not a subscription message: {e}"));
                vec![LiveMessage::error(None, &error)]
            }
            Ok(LiveRequest::Subscribe { id: None, .. }) => {
                match self.connections.follow(id, None, MAX_SUBSCRIPTIONS).await? {
                    Followed::Following => vec![LiveMessage::Subscribed { id: None }.text()],
                    Followed::Full => vec![too_many(None)],
                    Followed::NoConnection => Vec::new(),
                }
            }
            Ok(LiveRequest::Subscribe { id: Some(job), last_version }) => match JobId::parse(&job) {
                Ok(job) => self.subscribe(&connection, job, last_version).await?,
                Err(_) => vec![LiveMessage::error(None, &ApiError::NotFound)],
            },
            Ok(LiveRequest::Unsubscribe { id: job }) => match job.as_deref().map(JobId::parse).transpose() {
                Ok(job) => {
                    self.connections.unfollow(id, job.as_ref()).await?;
                    vec![LiveMessage::Unsubscribed { id: job, reason: EndReason::Requested }.text()]
                }
                Err(_) => vec![LiveMessage::error(None, &ApiError::NotFound)],
            },
        };
        self.reply(id, &replies).await
    }

    /// Answers a message that could not be read with an `error` message.
    pub async fn reply_error(&self, id: &ConnectionId, error: &ApiError) -> Result<(), BackendError> {
        self.reply(id, &[LiveMessage::error(None, error)]).await
    }

    async fn subscribe(
        &self,
        connection: &LiveConnection,
        job: JobId,
        seen: Option<u64>,
    ) -> Result<Vec<Utf8Bytes>, BackendError> {
        let id = &connection.id;
        match self.connections.follow(id, Some(&job), MAX_SUBSCRIPTIONS).await? {
            Followed::Following => {}
            Followed::Full => return Ok(vec![too_many(Some(job))]),
            // Closed since the message arrived: nobody to answer.
            Followed::NoConnection => return Ok(Vec::new()),
        }
        let current = match self.query.get(&connection.owner, &job).await {
            Ok(current) => current,
            Err(e) => {
                self.connections.unfollow(id, Some(&job)).await?;
                return match e {
                    QueryError::Backend(b) => Err(b),
                    other => Ok(vec![LiveMessage::error(Some(job), &ApiError::from(other))]),
                };
            }
        };
        let mut replies = vec![LiveMessage::Subscribed { id: Some(job) }.text()];
        if seen.is_none_or(|seen| current.version > seen) {
            replies.push(LiveMessage::job(&current));
        }
        if current.status().is_finished() {
            self.connections.unfollow(id, Some(&job)).await?;
            replies.push(LiveMessage::Unsubscribed { id: Some(job), reason: EndReason::Finished }.text());
        }
        Ok(replies)
    }

    /// Sends replies in order; a connection that went meanwhile is forgotten.
    async fn reply(&self, id: &ConnectionId, replies: &[Utf8Bytes]) -> Result<(), BackendError> {
        for text in replies {
            match self.sender.send(id, text.as_str()).await {
                Ok(()) => {}
                Err(SendError::Gone) => return self.connections.close(id).await,
                Err(SendError::Backend(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// Pushes a job's new state to every connection of its owner that follows it; ends the
    /// subscriptions to that job when it has finished. Fails if a connection could not be told
    /// for a reason other than its being gone (then the push may be repeated: a duplicate is
    /// recognisable by its `version`).
    pub async fn push(&self, job: &Job) -> Result<Pushed, BackendError> {
        let followers = self.connections.following(&job.owner, &job.id).await?;
        self.push_to(job, followers).await
    }

    /// [`Self::push`] to followers already looked up. A follower whose subscription ended is not
    /// told so again if the push is repeated (its state was sent; `unsubscribed` may be missing).
    async fn push_to(&self, job: &Job, followers: Vec<LiveConnection>) -> Result<Pushed, BackendError> {
        if followers.is_empty() {
            return Ok(Pushed::default());
        }
        let finished = job.status().is_finished();
        let state = LiveMessage::job(job);
        let end = LiveMessage::Unsubscribed { id: Some(job.id), reason: EndReason::Finished }.text();
        let outcomes: Vec<_> = futures::stream::iter(followers)
            .map(|connection| {
                let (state, end) = (&state, &end);
                async move {
                    let follows_the_job = connection.following.jobs.contains(&job.id);
                    let mut sent = self.sender.send(&connection.id, state.as_str()).await;
                    if sent.is_ok() && finished && follows_the_job {
                        self.connections.unfollow(&connection.id, Some(&job.id)).await?;
                        sent = self.sender.send(&connection.id, end.as_str()).await;
                    }
                    match sent {
                        Ok(()) => Ok(false),
                        Err(SendError::Gone) => self.connections.close(&connection.id).await.map(|()| true),
                        Err(SendError::Backend(e)) => Err(e),
                    }
                }
            })
            .buffer_unordered(FAN_OUT)
            .collect()
            .await;
        let mut pushed = Pushed::default();
        let mut failure = None;
        for outcome in outcomes {
            match outcome {
                Ok(true) => pushed.gone += 1,
                Ok(false) => pushed.sent += 1,
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(pushed),
        }
    }

    /// Handles one message of the live queue (the completion topic's `job.finished` events):
    /// the job is read, and pushed, only if one of its owner's connections follows it.
    pub async fn handle(&self, delivery: &Delivery) -> Disposition {
        let span = info_span!("live_push", message_id = %delivery.message_id, receive_count = delivery.receive_count);
        self.handle_in_span(delivery).instrument(span).await
    }

    async fn handle_in_span(&self, delivery: &Delivery) -> Disposition {
        let finished = match Message::parse(&delivery.body) {
            Ok(Message::JobFinished(finished)) => finished,
            Ok(other) => {
                warn!(kind = other.kind(), "not a message the live queue carries; dropping it");
                return Disposition::Ack;
            }
            Err(invalid) => {
                warn!(reason = %invalid.reason, "unreadable message on the live queue");
                return Disposition::DeadLetter;
            }
        };
        let retry_later = Disposition::Retry(Duration::from_secs(2));
        let followers = match self.connections.following(&finished.owner, &finished.job_id).await {
            Ok(followers) if followers.is_empty() => return Disposition::Ack,
            Ok(followers) => followers,
            Err(e) => {
                warn!(error = %e, cause = ?e, "could not read the live connections; retrying");
                return retry_later;
            }
        };
        let job = match self.query.get(&finished.owner, &finished.job_id).await {
            Ok(job) => job,
            Err(QueryError::Backend(e)) => {
                warn!(error = %e, cause = ?e, "could not read the job; retrying");
                return retry_later;
            }
            Err(_) => {
                debug!(job_id = %finished.job_id, "the job is gone; nothing to push");
                return Disposition::Ack;
            }
        };
        match self.push_to(&job, followers).await {
            Ok(pushed) => {
                debug!(job_id = %job.id, sent = pushed.sent, gone = pushed.gone, "pushed");
                Disposition::Ack
            }
            Err(e) => {
                warn!(error = %e, cause = ?e, job_id = %job.id, "could not push to every follower; retrying");
                retry_later
            }
        }
    }
}
