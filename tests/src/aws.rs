//! Harness for the LocalStack suite: a CloudFormation stack of `infra/storage.yaml` per test (its
//! own bucket, table, topic, queue and dead-letter queue, so tests run in parallel and test what
//! the template deploys), and requests shaped the way API Gateway hands them to the functions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
};
use aws_sdk_cloudformation::types::{Parameter, StackStatus};
use labelq_shared::adapters::aws::{Resources, TlsTrust, s3_client, sdk_config};
use lambda_http::request::RequestContext;

/// The storage and messaging template, as deployed.
pub const STORAGE_TEMPLATE: &str = include_str!("../../infra/storage.yaml");

/// One deployed stack.
pub struct Stack {
    pub name: String,
    pub outputs: HashMap<String, String>,
    pub sdk: SdkConfig,
}

/// The SDK configuration for LocalStack; fails (never skips) when it is not running.
pub async fn localstack() -> SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1") || endpoint.starts_with("http://localhost"),
        "the LocalStack suite needs LocalStack: eval \"$(localstack/start.sh)\" first (AWS_ENDPOINT_URL={endpoint:?})"
    );
    sdk_config(TlsTrust::Native).await
}

impl Stack {
    /// Deploys the template with these parameters, under a name of its own.
    pub async fn deploy(parameters: &[(&str, &str)]) -> Self {
        let sdk = localstack().await;
        let cfn = aws_sdk_cloudformation::Client::new(&sdk);
        let name = format!("labelq-test-{}", &uuid_suffix());
        let mut request = cfn.create_stack().stack_name(&name).template_body(STORAGE_TEMPLATE);
        for (key, value) in parameters {
            request = request.parameters(Parameter::builder().parameter_key(*key).parameter_value(*value).build());
        }
        request.send().await.unwrap_or_else(|e| panic!("creating stack {name}: {e:?}"));

        let started = Instant::now();
        loop {
            let described = cfn.describe_stacks().stack_name(&name).send().await.expect("describe_stacks");
            let stack = described.stacks().first().expect("the stack").clone();
            match stack.stack_status() {
                Some(StackStatus::CreateComplete) => {
                    let outputs = stack
                        .outputs()
                        .iter()
                        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
                        .collect();
                    return Self { name, outputs, sdk };
                }
                Some(StackStatus::CreateInProgress) => {}
                other => panic!("stack {name} ended {other:?}: {:?}", stack.stack_status_reason()),
            }
            assert!(started.elapsed() < Duration::from_secs(120), "stack {name} still creating");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn output(&self, key: &str) -> String {
        self.outputs.get(key).cloned().unwrap_or_else(|| panic!("stack output {key} missing: {:?}", self.outputs))
    }

    pub fn resources(&self) -> Resources {
        Resources { table: self.output("TableName"), bucket: self.output("BucketName") }
    }

    /// Environment for a process that should use this stack (`labelq serve --backend aws`).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LABELQ_TABLE".into(), self.output("TableName")),
            ("LABELQ_BUCKET".into(), self.output("BucketName")),
            ("LABELQ_TOPIC_ARN".into(), self.output("TopicArn")),
            ("LABELQ_QUEUE_URL".into(), self.output("QueueUrl")),
            ("LABELQ_COMPLETION_TOPIC_ARN".into(), self.output("CompletionTopicArn")),
            ("LABELQ_CALLBACK_QUEUE_URL".into(), self.output("CallbackQueueUrl")),
            ("LABELQ_CALLBACK_SECRET_ARN".into(), self.output("CallbackSecretArn")),
        ]
    }

    /// Empties the bucket and deletes the stack.
    pub async fn delete(self) {
        let s3 = s3_client(&self.sdk);
        let bucket = self.output("BucketName");
        if let Ok(listed) = s3.list_objects_v2().bucket(&bucket).send().await {
            for object in listed.contents() {
                if let Some(key) = object.key() {
                    let _ = s3.delete_object().bucket(&bucket).key(key).send().await;
                }
            }
        }
        let cfn = aws_sdk_cloudformation::Client::new(&self.sdk);
        let _ = cfn.delete_stack().stack_name(&self.name).send().await;
    }
}

fn uuid_suffix() -> String {
    let id = labelq_shared::domain::CorrelationId::new();
    id.as_str()[..12].to_owned()
}

/// The request context API Gateway's HTTP API attaches after its JWT authorizer verified a token
/// with this `sub`.
pub fn jwt_context(sub: &str) -> RequestContext {
    let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
    jwt.claims = HashMap::from([("sub".to_owned(), sub.to_owned())]);
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.jwt = Some(jwt);
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.authorizer = Some(authorizer);
    RequestContext::ApiGatewayV2(context)
}

/// A request as `lambda_http` hands it to the router, for the caller `sub`.
pub fn api_request(
    method: &str,
    uri: &str,
    sub: &str,
    body: Vec<u8>,
    content_type: &str,
) -> http::Request<axum::body::Body> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(axum::body::Body::from(body))
        .expect("a request");
    request.extensions_mut().insert(jwt_context(sub));
    request
}
