//! Adapters: one module per technology, each implementing the ports it serves.

#[cfg(feature = "embedded")]
pub mod fs;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "embedded")]
pub mod sqlite;
