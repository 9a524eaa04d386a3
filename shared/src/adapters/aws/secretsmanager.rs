//! The completion callbacks' signing secrets, read from AWS Secrets Manager: once per execution
//! environment, when the callback function starts, and kept for its life (a rotation reaches
//! each environment as it is replaced; sign with both secrets meanwhile, see below).
//!
//! The secret's value is what `LABELQ_CALLBACK_SECRETS` holds locally: one or more webhook
//! secrets separated by spaces, commas or line breaks, the newest first, each signing every call
//! so that receivers can move to a new one at their own pace. The `whsec_` prefix is optional,
//! so the value Secrets Manager generates for the template's secret (44 letters and digits) is
//! one secret as it stands; a receiver verifies with `whsec_` and that value.
//!
//! Nothing here logs or returns the value: an error names the secret and the rule it broke.

use aws_sdk_secretsmanager::Client;

use super::classify;
use crate::ports::BackendError;
use crate::webhooks::WebhookSecrets;

/// Why the signing secrets could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("could not read the callback signing secret {secret}")]
    Read {
        secret: String,
        #[source]
        source: BackendError,
    },
    #[error("the callback signing secret {secret} holds no text value")]
    NotText { secret: String },
    #[error("the callback signing secret {secret} is not a list of webhook secrets: {reason}")]
    Invalid { secret: String, reason: String },
}

/// The webhook secrets held by `secret` (a name or an ARN), current version.
pub async fn webhook_secrets(client: &Client, secret: &str) -> Result<WebhookSecrets, SecretError> {
    let value = client.get_secret_value().secret_id(secret).send().await.map_err(|e| SecretError::Read {
        secret: secret.to_owned(),
        source: classify("Secrets Manager GetSecretValue", e),
    })?;
    let text = value.secret_string().ok_or_else(|| SecretError::NotText { secret: secret.to_owned() })?;
    text.parse().map_err(|reason| SecretError::Invalid { secret: secret.to_owned(), reason })
}
