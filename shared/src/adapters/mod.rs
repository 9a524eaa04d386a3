//! Adapters: one module per technology, each implementing the ports it serves.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "embedded")]
pub mod fs;
#[cfg(feature = "embedded")]
pub mod hmac_uploads;
#[cfg(feature = "live-api")]
pub mod oidc;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "callbacks")]
pub mod reqwest;
#[cfg(feature = "embedded")]
pub mod sqlite;
