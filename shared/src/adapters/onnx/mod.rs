//! [`OnnxDetector`]: the built-in offline label detector. EfficientNet-Lite0 (ImageNet-1k) run on
//! the CPU by ONNX Runtime, loaded at run time from the shared library of the PyPI `onnxruntime`
//! wheel (`ort` with `load-dynamic`), so it builds from the registries alone.
//!
//! The model file is read once per process. Each of N sessions built from it runs one image at a
//! time on one thread; a semaphore with N permits bounds decode + inference, which run on the
//! blocking pool, so N workers use N cores and memory stays flat under any backlog.
//!
//! The model directory (see `model/prepare.py`, which creates it) holds:
//! `efficientnet-lite0.onnx` (input `input` `[batch, 3, 224, 224]`, output `probabilities`
//! `[batch, 1000]`) and `libonnxruntime.so`.

mod decode;
mod preprocess;
mod taxonomy;

pub use decode::{MAX_PIXELS, decode_rgb};
pub use preprocess::to_input;
pub use taxonomy::{Taxonomy, TaxonomyError};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use tokio::sync::Semaphore;

use crate::domain::{ContentType, DetectOptions, FailureCode, ImageLimits, Label};
use crate::ports::{DetectError, ImageInput, InputKind, LabelDetector};

pub const MODEL_FILE: &str = "efficientnet-lite0.onnx";
pub const RUNTIME_FILE: &str = "libonnxruntime.so";
const INPUT: &str = "input";
const OUTPUT: &str = "probabilities";

/// Why the model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "{file} is missing from the model directory {dir}; run `python3 model/prepare.py --model-dir {dir}` (needs PyPI access once), or point --model-dir / LABELQ_MODEL_DIR at a prepared directory"
    )]
    Missing { dir: PathBuf, file: &'static str },
    #[error("could not read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ONNX Runtime failed to {action}")]
    Runtime {
        action: &'static str,
        #[source]
        source: ort::Error,
    },
    #[error("could not load the ONNX Runtime library {path}: {message}")]
    Library { path: PathBuf, message: String },
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    #[error("the model has unexpected inputs/outputs: {0}")]
    Graph(String),
}

#[derive(Debug, Clone)]
pub struct OnnxConfig {
    pub model_dir: PathBuf,
    /// How many images may be processed at once (one session each): the worker count.
    pub sessions: usize,
    /// Threads each session uses for one image.
    pub threads_per_session: usize,
    pub limits: ImageLimits,
}

impl OnnxConfig {
    pub fn new(model_dir: impl Into<PathBuf>, sessions: usize) -> Self {
        Self {
            model_dir: model_dir.into(),
            sessions: sessions.max(1),
            threads_per_session: 1,
            limits: ImageLimits::default(),
        }
    }
}

/// Where the time went for one image; for benchmarks and logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub decode: Duration,
    pub preprocess: Duration,
    pub inference: Duration,
}

#[derive(Debug, Clone)]
pub struct OnnxDetector {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sessions: Mutex<Vec<Session>>,
    permits: Arc<Semaphore>,
    taxonomy: Taxonomy,
    limits: ImageLimits,
}

/// ONNX Runtime's environment is process-wide and its library can be loaded only once.
static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

fn environment(library: &Path) -> Result<Environment, ModelError> {
    ENVIRONMENT
        .get_or_init(|| {
            ort::init_from(library)
                .map_err(|e| e.to_string())?
                .with_name("labelq")
                .with_telemetry(false)
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|message| ModelError::Library { path: library.to_owned(), message })
}

impl OnnxDetector {
    /// Loads the model and builds the sessions. Takes 100-300 ms; do it once, at start.
    pub fn load(config: &OnnxConfig) -> Result<Self, ModelError> {
        let dir = &config.model_dir;
        let require = |file: &'static str| {
            let path = dir.join(file);
            if path.is_file() { Ok(path) } else { Err(ModelError::Missing { dir: dir.clone(), file }) }
        };
        let model_path = require(MODEL_FILE)?;
        let library = require(RUNTIME_FILE)?;
        let env = environment(&library)?;
        let model = std::fs::read(&model_path).map_err(|source| ModelError::Io { path: model_path.clone(), source })?;

        let sessions = (0..config.sessions.max(1))
            .map(|_| build_session(&env, &model, config.threads_per_session))
            .collect::<Result<Vec<_>, _>>()?;
        let taxonomy = Taxonomy::builtin()?;
        Ok(Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(sessions.len())),
                sessions: Mutex::new(sessions),
                taxonomy,
                limits: config.limits,
            }),
        })
    }

    pub fn taxonomy(&self) -> &Taxonomy {
        &self.inner.taxonomy
    }

    /// Decodes, preprocesses and classifies one image on the calling thread; returns the 1000
    /// class probabilities. Blocks: call it from a blocking context.
    pub fn classify_blocking(
        &self,
        bytes: &[u8],
        content_type: ContentType,
    ) -> Result<(Vec<f32>, Timings), DetectError> {
        self.inner.classify(bytes, content_type)
    }

    /// Labels for one image, on the calling thread. Blocks.
    pub fn labels_blocking(
        &self,
        bytes: &[u8],
        content_type: ContentType,
        options: &DetectOptions,
    ) -> Result<Vec<Label>, DetectError> {
        let (probabilities, _) = self.inner.classify(bytes, content_type)?;
        Ok(self.inner.taxonomy.labels(&probabilities, options))
    }
}

fn build_session(env: &Environment, model: &[u8], threads: usize) -> Result<Session, ModelError> {
    let configure = |source: ort::Error<ort::session::builder::SessionBuilder>| ModelError::Runtime {
        action: "configure a session",
        source: source.into(),
    };
    let session = Session::builder(env)
        .map_err(|source| ModelError::Runtime { action: "create a session builder", source })?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(configure)?
        .with_intra_threads(threads.max(1))
        .map_err(configure)?
        .with_inter_threads(1)
        .map_err(configure)?
        .commit_from_memory(model)
        .map_err(|source| ModelError::Runtime { action: "load the model", source })?;
    check_graph(&session)?;
    Ok(session)
}

fn check_graph(session: &Session) -> Result<(), ModelError> {
    let has = |outlets: &[ort::value::Outlet], name: &str| outlets.iter().any(|o| o.name() == name);
    if has(session.inputs(), INPUT) && has(session.outputs(), OUTPUT) {
        Ok(())
    } else {
        Err(ModelError::Graph(format!("expected input {INPUT:?} and output {OUTPUT:?}")))
    }
}

/// Returns a checked-out session to the pool when dropped, even on unwind.
struct Checkout<'a> {
    pool: &'a Mutex<Vec<Session>>,
    session: Option<Session>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(session);
        }
    }
}

impl Inner {
    fn classify(&self, bytes: &[u8], content_type: ContentType) -> Result<(Vec<f32>, Timings), DetectError> {
        let started = Instant::now();
        let image = decode_rgb(bytes, content_type, &self.limits)?;
        let decoded = Instant::now();
        let input = to_input(&image);
        drop(image);
        let preprocessed = Instant::now();
        let probabilities = self.infer(&input)?;
        let timings = Timings {
            decode: decoded - started,
            preprocess: preprocessed - decoded,
            inference: preprocessed.elapsed(),
        };
        Ok((probabilities, timings))
    }

    fn infer(&self, input: &[f32]) -> Result<Vec<f32>, DetectError> {
        let session = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut checkout = Checkout { pool: &self.sessions, session };
        let session = checkout
            .session
            .as_mut()
            .ok_or_else(|| DetectError::Transient("no free model session (more callers than permits)".into()))?;
        let transient = |e: ort::Error| DetectError::Transient(Box::new(e));
        let tensor =
            TensorRef::from_array_view(([1usize, 3, preprocess::SIDE, preprocess::SIDE], input)).map_err(transient)?;
        let outputs = session.run(ort::inputs![INPUT => tensor]).map_err(transient)?;
        let (_, probabilities) = outputs[OUTPUT].try_extract_tensor::<f32>().map_err(transient)?;
        if probabilities.len() != self.taxonomy.class_count() {
            return Err(DetectError::permanent(
                FailureCode::Internal,
                format!(
                    "the model gave {} classes; the label table has {}",
                    probabilities.len(),
                    self.taxonomy.class_count()
                ),
            ));
        }
        Ok(probabilities.to_vec())
    }
}

#[async_trait]
impl LabelDetector for OnnxDetector {
    fn input_kind(&self) -> InputKind {
        InputKind::Bytes
    }

    async fn detect(&self, image: ImageInput, options: &DetectOptions) -> Result<Vec<Label>, DetectError> {
        let ImageInput::Bytes { bytes, content_type } = image else {
            return Err(DetectError::permanent(FailureCode::Internal, "the built-in detector needs the image bytes"));
        };
        let permit =
            self.inner.permits.clone().acquire_owned().await.map_err(|e| DetectError::Transient(Box::new(e)))?;
        let inner = self.inner.clone();
        let options = *options;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (probabilities, timings) = inner.classify(&bytes, content_type)?;
            tracing::debug!(
                decode_ms = timings.decode.as_secs_f64() * 1e3,
                inference_ms = timings.inference.as_secs_f64() * 1e3,
                "image classified"
            );
            Ok(inner.taxonomy.labels(&probabilities, &options))
        })
        .await
        .map_err(|e| {
            if e.is_panic() {
                // A decoder bug on this image would panic again on every retry.
                DetectError::Permanent {
                    code: FailureCode::Internal,
                    message: "the detector failed on this image".into(),
                    source: Some(Box::new(e)),
                }
            } else {
                DetectError::Transient(Box::new(e))
            }
        })?
    }
}
