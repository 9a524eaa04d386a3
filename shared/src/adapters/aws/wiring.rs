//! The AWS adapters over the resources a deployment names: the stores, the topic and the queue,
//! each client built once per process from one [`SdkConfig`]. Used by the Lambda functions, by
//! `labelq serve --backend aws` and by the LocalStack suite.

use std::sync::Arc;

use aws_config::SdkConfig;

use super::{DynamoDefaultCallbacks, DynamoJobStore, LazyClient, S3ImageStore, SnsPublisher, SqsQueue, s3_client};
use crate::config::{self, ConfigError};
use crate::service::Stores;

/// The table and bucket a process works on, named by `LABELQ_TABLE` and `LABELQ_BUCKET` (see
/// `infra/template.yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub table: String,
    pub bucket: String,
}

impl Resources {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { table: config::required("LABELQ_TABLE")?, bucket: config::required("LABELQ_BUCKET")? })
    }
}

/// The S3 and DynamoDB stores over those resources.
#[derive(Debug, Clone)]
pub struct AwsStores {
    pub images: Arc<S3ImageStore>,
    pub jobs: Arc<DynamoJobStore>,
    /// Owners' default callbacks, in the jobs table.
    pub defaults: Arc<DynamoDefaultCallbacks>,
}

impl AwsStores {
    /// Both clients built now: for a process whose requests all use S3 (the request-handler
    /// stores every upload there).
    pub fn new(sdk: &SdkConfig, resources: &Resources) -> Self {
        Self::with_s3(sdk, resources, s3_client(sdk).into())
    }

    /// The S3 client built on first use: for a function whose requests seldom reach S3 (the
    /// status-api reads it for oversized results and deletes; the Rekognition worker, whose
    /// detector reads the image itself, only for oversized results). See [`LazyClient`].
    pub fn with_s3_on_first_use(sdk: &SdkConfig, resources: &Resources) -> Self {
        Self::with_s3(sdk, resources, LazyClient::from_config(sdk, s3_client))
    }

    fn with_s3(sdk: &SdkConfig, resources: &Resources, s3: LazyClient<aws_sdk_s3::Client>) -> Self {
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        Self {
            images: Arc::new(S3ImageStore::new(s3.clone(), &resources.bucket)),
            jobs: Arc::new(DynamoJobStore::new(dynamo.clone(), &resources.table, s3, &resources.bucket)),
            defaults: Arc::new(DynamoDefaultCallbacks::new(dynamo, &resources.table)),
        }
    }

    /// As the services take them.
    pub fn stores(&self) -> Stores {
        Stores { images: self.images.clone(), jobs: self.jobs.clone() }
    }
}

/// The topic new jobs are announced on (`LABELQ_TOPIC_ARN`).
pub fn sns_publisher(sdk: &SdkConfig, topic_arn: &str) -> Arc<SnsPublisher> {
    Arc::new(SnsPublisher::new(aws_sdk_sns::Client::new(sdk), topic_arn))
}

/// The job queue (`LABELQ_QUEUE_URL`) with its client built now, for a poller that calls it all
/// the time.
pub fn sqs_queue(sdk: &SdkConfig, queue_url: &str) -> Arc<SqsQueue> {
    Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(sdk), queue_url))
}
