//! AWS adapters: [`S3ImageStore`], [`DynamoJobStore`], [`SnsPublisher`], [`SqsQueue`] and
//! [`RekognitionDetector`], direct uploads' presigned PUTs ([`S3UploadTargets`]), the WebSocket API's connections ([`DynamoLiveConnections`]) and
//! messages (`ApiGatewayLiveSender`, feature `live-api`), the callbacks' signing secrets from Secrets Manager
//! ([`webhook_secrets`]), plus the SDK configuration they share.
//!
//! Clients are built once per process from one [`SdkConfig`]; those a function seldom calls, on
//! first use ([`LazyClient`]). Pointing everything at LocalStack is only an endpoint override
//! (`AWS_ENDPOINT_URL`, read by the SDK itself) plus path-style S3 addressing, which emulators need
//! and which is switched on whenever an endpoint is overridden.
//!
//! Every SDK error is sorted into transient or permanent here, deliberately: throttling, 5xx,
//! timeouts and dropped connections are transient; everything else (a missing table, a malformed
//! request, an access denial) will not fix itself by retrying.
//!
//! # Access denials: one policy
//! An access denial (a role, a bucket, key or topic policy, an SCP, or credentials that are wrong
//! or expired; see [`is_access_denied`]) is a deployment fault: neither the request's fault nor
//! the image's, and it does not clear up on its own. Every adapter reports it the same way, a
//! permanent [`BackendError`] naming the operation, with the SDK error as its source, and every
//! caller treats it the same way:
//! - the API answers 500 with an opaque body and logs the cause once;
//! - the worker never turns it into a reason about the image. Like every failure of a store or
//!   a detector's service, it is retried with backoff (a fix within the retries loses nothing),
//!   and on the last delivery the job fails with `retries_exhausted` and the message goes to the
//!   dead-letter queue, where the alarm sees it. Rekognition's `AccessDeniedException` is sorted
//!   the same way: a detection failure that is not about the image.

#[cfg(feature = "live-api")]
mod apigateway_live_sender;
mod dynamodb;
mod dynamodb_default_callbacks;
mod dynamodb_live_connections;
mod rekognition;
mod s3;
mod s3_drops;
mod s3_events;
mod s3_uploads;
mod secretsmanager;
mod sns;
mod sqs;
mod wiring;

#[cfg(feature = "live-api")]
pub use apigateway_live_sender::ApiGatewayLiveSender;
pub use dynamodb::DynamoJobStore;
pub use dynamodb_default_callbacks::DynamoDefaultCallbacks;
pub use dynamodb_live_connections::{BY_OWNER_INDEX, DynamoLiveConnections};
pub use rekognition::RekognitionDetector;
pub use s3::S3ImageStore;
pub use s3_drops::{DROP_PREFIX, DROP_RESULTS_PREFIX, S3DropResults, S3DroppedObjects};
pub use s3_events::{CreatedObject, InvalidNotification, S3Notification, decode_key, parse_s3_notification};
pub use s3_uploads::S3UploadTargets;
pub use secretsmanager::{SecretError, webhook_secrets};
pub use sns::{CORRELATION_ID, MESSAGE_TYPE, SnsPublisher};
pub use sqs::{SqsQueue, delivery_from_sqs, unwrap_sns_envelope};
pub use wiring::{AwsStores, Resources, sns_publisher, sqs_queue};

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use aws_config::environment::{EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider};
use aws_config::meta::region::ProvideRegion;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder as HttpsClientBuilder, ConnectorBuilder};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::{RuntimeComponents, RuntimeComponentsBuilder};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::config_bag::ConfigBag;

use crate::config::{self, ConfigError, Setting};
use crate::ports::BackendError;

/// The shared SDK configuration: region, credentials and endpoint from the environment, and one
/// HTTPS client trusting the certificate authorities `trust` names.
///
/// Where the environment itself names the region and holds credentials, as Lambda's always does,
/// they are taken from it directly. That is what the SDK's default chains settle on first anyway;
/// skipping the chains spares each cold start building the providers behind them that would never
/// be asked (an STS client for web identity, an IMDS client, the SSO token chain).
pub async fn sdk_config(trust: TlsTrust) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client(trust));
    if let Some(region) = EnvironmentVariableRegionProvider::new().region().await {
        loader = loader.region(region);
    }
    if let Ok(credentials) = EnvironmentVariableCredentialsProvider::new().provide_credentials().await {
        loader = loader.credentials_provider(credentials);
    }
    loader.load().await
}

/// Which certificate authorities the SDK's HTTPS client trusts (`LABELQ_TLS_TRUST`).
///
/// `native`, the default, is the SDK's own choice: every root in the system's store, read from disk
/// when the first client is built. `amazon` trusts only the Amazon Trust Services roots that every
/// AWS service endpoint chains to in the `aws` and `aws-us-gov` partitions, compiled in. It is a
/// smaller set of authorities to trust, and it spares each cold start reading and parsing the
/// system store, more than half of a Lambda's init time (see BENCHMARKS.md). It is wrong for the China
/// and isolated partitions, for endpoints behind a TLS-inspecting proxy, and for emulators served
/// over HTTPS with their own certificate: keep `native` there. The SAM template sets `amazon` only
/// in the two partitions where it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsTrust {
    #[default]
    Native,
    Amazon,
}

impl Setting for TlsTrust {
    const VARIABLE: &'static str = "LABELQ_TLS_TRUST";
}

impl TlsTrust {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(config::read::<Self>()?.unwrap_or_default())
    }

    fn trust_store(self) -> TrustStore {
        match self {
            Self::Native => TrustStore::default(),
            Self::Amazon => {
                TrustStore::empty().with_native_roots(false).with_pem_certificate(AMAZON_TRUST_ROOTS_PEM.as_bytes())
            }
        }
    }
}

impl FromStr for TlsTrust {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "native" => Ok(Self::Native),
            "amazon" => Ok(Self::Amazon),
            _ => Err("expected native or amazon".to_owned()),
        }
    }
}

/// The Amazon Trust Services roots, as PEM.
pub const AMAZON_TRUST_ROOTS_PEM: &str = include_str!("../../../data/amazon-trust-roots.pem");

/// The HTTPS client every SDK client in the process shares, validated once.
fn https_client(trust: TlsTrust) -> SharedHttpClient {
    // The compiled-in Amazon roots are a constant, checked by this module's tests; the system's
    // store is checked once, when the first client is built.
    let validated = AtomicBool::new(trust == TlsTrust::Amazon);
    SharedHttpClient::new(ValidatedOnce { inner: hyper_client(trust), validated })
}

/// The SDK's default HTTPS client (hyper and rustls with aws-lc, connectors cached per timeout
/// settings, proxies from the environment) over the trust store `trust` names.
fn hyper_client(trust: TlsTrust) -> SharedHttpClient {
    let tls =
        TlsContext::builder().with_trust_store(trust.trust_store()).build().expect("a TLS context without extra names");
    HttpsClientBuilder::new().build_with_connector_fn(move |settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc)).tls_context(tls.clone());
        connector.set_connector_settings(settings.cloned());
        connector.set_sleep_impl(components.and_then(|c| c.sleep_impl()));
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// An HTTP client whose base configuration is validated by the first service client built on it
/// and taken as valid by the rest.
///
/// The hyper client validates by building a connector and dropping it, so that an unusable trust
/// store fails when a client is built rather than at its first request. That assembles a rustls
/// configuration and parses every trusted root again for each service client (and for the
/// clients inside the credential providers), the same check of the same store each time. The
/// connector a request uses is built and cached on first use either way.
#[derive(Debug)]
struct ValidatedOnce {
    inner: SharedHttpClient,
    validated: AtomicBool,
}

impl HttpClient for ValidatedOnce {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.inner.http_connector(settings, components)
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        if !self.validated.load(Ordering::Acquire) {
            self.inner.validate_base_client_config(components, cfg)?;
            self.validated.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn validate_final_config(&self, components: &RuntimeComponents, cfg: &ConfigBag) -> Result<(), BoxError> {
        self.inner.validate_final_config(components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

/// An S3 client; path-style addressing when the endpoint is overridden (LocalStack, MinIO).
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let builder = aws_sdk_s3::config::Builder::from(config).force_path_style(config.endpoint_url().is_some());
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// A service client built when first used rather than at init.
///
/// Building its first client is the bulk of what the SDK costs a cold start: each service crate
/// parses and compiles its endpoint rules then, and the client assembles its runtime plugins. A
/// function whose invocations seldom call a service would pay that at every start for nothing;
/// the Rekognition worker, for one, reads S3 only for results too large for an item and calls
/// SQS only to back off a failing message. A function builds at init the clients every invocation
/// uses (deferring those would only move the cost into the first request) and defers the rest.
///
/// Deferring does not turn an init failure into a request failure as long as a function builds
/// at least one client from the same [`SdkConfig`] at init, as each of ours does: what a client's
/// build checks (HTTP client, sleep and time source, retry and timeout settings) comes from that
/// config and is checked by the first client built from it. Clones share one client; [`From`]
/// wraps one that is built already.
pub struct LazyClient<C> {
    inner: Arc<LazyInner<C>>,
}

struct LazyInner<C> {
    client: OnceLock<C>,
    build: Box<dyn Fn() -> C + Send + Sync>,
}

impl<C: 'static> LazyClient<C> {
    /// A client `build` makes when first dereferenced; `build` runs once, whichever clone gets
    /// there first.
    pub fn new(build: impl Fn() -> C + Send + Sync + 'static) -> Self {
        Self { inner: Arc::new(LazyInner { client: OnceLock::new(), build: Box::new(build) }) }
    }

    /// A client `build` makes from `config` on first use, e.g. `LazyClient::from_config(sdk, s3_client)`.
    pub fn from_config(config: &SdkConfig, build: fn(&SdkConfig) -> C) -> Self {
        let config = config.clone();
        Self::new(move || build(&config))
    }
}

impl<C> LazyClient<C> {
    /// Whether the client has been built yet.
    pub fn is_built(&self) -> bool {
        self.inner.client.get().is_some()
    }
}

impl<C: Clone + Send + Sync + 'static> From<C> for LazyClient<C> {
    fn from(client: C) -> Self {
        let built = OnceLock::from(client.clone());
        Self { inner: Arc::new(LazyInner { client: built, build: Box::new(move || client.clone()) }) }
    }
}

impl<C> Deref for LazyClient<C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.inner.client.get_or_init(|| (self.inner.build)())
    }
}

impl<C> Clone for LazyClient<C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<C> fmt::Debug for LazyClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyClient").field("built", &self.is_built()).finish()
    }
}

/// Service error codes that mean "not now" rather than "not ever".
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "LimitExceededException",
    "KMSThrottlingException",
    "InternalServerError",
    "InternalError",
    "InternalFailure",
    "InternalServerErrorException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Service error codes of an access denial, across the services labelq calls: IAM and resource
/// policies (`AccessDenied` from S3 and SQS, `AccessDeniedException` from DynamoDB and
/// Rekognition, `AuthorizationError` from SNS, KMS behind any of them), and credentials that are
/// wrong or expired.
const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AuthorizationError",
    "KMS.AccessDeniedException",
    "KMSAccessDeniedException",
    "AllAccessDisabled",
    "UnauthorizedOperation",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
];

/// Whether a service error code, or the HTTP status it came with, is worth a retry.
pub fn is_transient(code: Option<&str>, status: u16) -> bool {
    code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) || status >= 500 || status == 429
}

/// Whether a service error is an access denial (see the module docs for what follows from it). A
/// bare 403 counts: S3 answers HEAD requests without an error code.
pub fn is_access_denied(code: Option<&str>, status: u16) -> bool {
    code.is_some_and(|c| ACCESS_DENIED_CODES.contains(&c)) || (code.is_none() && status == 403)
}

/// Sorts an SDK error into a [`BackendError`], keeping it whole as the source.
pub(crate) fn classify<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => {
            let (code, status) = (e.err().code(), e.raw().status().as_u16());
            !is_access_denied(code, status) && is_transient(code, status)
        }
        _ => false,
    };
    BackendError { operation, retryable, source: Box::new(err) }
}

/// The service error code of an SDK error, if it is a service error.
pub(crate) fn service_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn a_lazy_client_is_built_once_on_first_use_and_shared_by_its_clones() {
        let builds = Arc::new(AtomicUsize::new(0));
        let counter = builds.clone();
        let lazy = LazyClient::new(move || counter.fetch_add(1, Ordering::SeqCst) + 100);
        let clone = lazy.clone();
        assert_eq!(builds.load(Ordering::SeqCst), 0, "nothing built before first use");
        assert!(!lazy.is_built());

        let used: Vec<usize> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4).map(|_| s.spawn(|| *clone.clone())).collect();
            threads.into_iter().map(|t| t.join().expect("thread")).collect()
        });
        assert_eq!(used, [100; 4]);
        assert_eq!(*lazy, 100);
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert!(lazy.is_built());
    }

    #[test]
    fn a_client_built_already_is_not_built_again() {
        let lazy = LazyClient::from(String::from("built"));
        assert!(lazy.is_built());
        assert_eq!(lazy.as_str(), "built");
    }

    #[test]
    fn throttling_and_server_errors_are_transient_the_rest_permanent() {
        assert!(is_transient(Some("ThrottlingException"), 400));
        assert!(is_transient(Some("ProvisionedThroughputExceededException"), 400));
        assert!(is_transient(None, 503));
        assert!(is_transient(None, 429));
        assert!(!is_transient(Some("ResourceNotFoundException"), 400));
        assert!(!is_transient(Some("AccessDenied"), 403));
        assert!(!is_transient(Some("ValidationException"), 400));
    }

    #[test]
    fn denials_are_recognised_by_code_or_a_bare_403_and_are_never_transient() {
        for code in ["AccessDenied", "AccessDeniedException", "AuthorizationError", "KMS.AccessDeniedException"] {
            assert!(is_access_denied(Some(code), 403) && !is_transient(Some(code), 403), "{code}");
            assert!(is_access_denied(Some(code), 400), "{code} with a 400 (SNS, DynamoDB)");
        }
        assert!(is_access_denied(None, 403), "S3 HEAD answers a bare 403");
        assert!(!is_access_denied(Some("NoSuchKey"), 404));
        assert!(!is_access_denied(Some("SignatureDoesNotMatchNot"), 403));
    }

    /// What the SDK does with the PEM when it builds a connector, where a bad certificate would
    /// panic (at the first request: the store is not re-checked at each cold start).
    #[test]
    fn the_amazon_trust_store_is_the_five_amazon_trust_services_roots() {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;

        let certs = CertificateDer::pem_slice_iter(AMAZON_TRUST_ROOTS_PEM.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("valid PEM");
        let mut roots = rustls::RootCertStore::empty();
        assert_eq!(roots.add_parsable_certificates(certs), (5, 0));
        let subjects: Vec<String> =
            roots.roots.iter().map(|anchor| String::from_utf8_lossy(anchor.subject.as_ref()).into_owned()).collect();
        for name in [
            "Amazon Root CA 1",
            "Amazon Root CA 2",
            "Amazon Root CA 3",
            "Amazon Root CA 4",
            "Starfield Services Root Certificate Authority - G2",
        ] {
            assert!(subjects.iter().any(|s| s.contains(name)), "{name} missing from {subjects:?}");
        }
    }

    /// The check the first client would otherwise make at each cold start: building a connector
    /// over the compiled-in roots, which panics on a root rustls cannot use.
    #[test]
    fn a_connector_builds_over_the_amazon_roots() {
        let components = RuntimeComponentsBuilder::new("test");
        hyper_client(TlsTrust::Amazon).validate_base_client_config(&components, &ConfigBag::base()).expect("valid");
    }

    #[test]
    fn tls_trust_is_native_unless_amazon_is_asked_for() {
        assert_eq!(TlsTrust::default(), TlsTrust::Native);
        assert_eq!("native".parse(), Ok(TlsTrust::Native));
        assert_eq!("amazon".parse(), Ok(TlsTrust::Amazon));
        assert!("webpki".parse::<TlsTrust>().is_err());
    }
}
