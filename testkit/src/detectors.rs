//! Detectors that behave as a test tells them to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use labelq_shared::domain::{Confidence, DetectOptions, Findings, Label};
use labelq_shared::ports::{DetectError, ImageInput, InputKind, LabelDetector};
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

/// A label with no parents, 90 % confident.
pub fn label(name: &str) -> Label {
    Label {
        name: name.into(),
        confidence: Confidence::from_probability(0.9),
        parents: vec![],
        aliases: vec![],
        categories: vec![],
        instances: vec![],
    }
}

/// What a [`ScriptedDetector`] does on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers one label, "Thing".
    Succeed,
    FailTransiently,
    Panic,
    /// Signals `entered`, waits until `release` is notified, then succeeds.
    Block,
}

#[derive(Debug)]
pub struct ScriptedDetector {
    pub behaviour: Mutex<Behaviour>,
    pub calls: AtomicUsize,
    pub entered: Notify,
    pub release: Notify,
}

impl ScriptedDetector {
    pub fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            behaviour: Mutex::new(behaviour),
            calls: AtomicUsize::new(0),
            entered: Notify::new(),
            release: Notify::new(),
        })
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap_or_else(|p| p.into_inner()) = behaviour;
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl LabelDetector for ScriptedDetector {
    fn input_kind(&self) -> InputKind {
        InputKind::Bytes
    }

    async fn detect(&self, _: ImageInput, _: &DetectOptions) -> Result<Findings, DetectError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let behaviour = *self.behaviour.lock().unwrap_or_else(|p| p.into_inner());
        match behaviour {
            Behaviour::Succeed => Ok(Findings::labels(vec![label("Thing")])),
            Behaviour::FailTransiently => Err(DetectError::Transient("injected".into())),
            Behaviour::Panic => panic!("detector bug"),
            Behaviour::Block => {
                self.entered.notify_one();
                self.release.notified().await;
                Ok(Findings::labels(vec![label("Thing")]))
            }
        }
    }
}

/// Costs nothing and always answers one label, "Stub"; counts its calls.
#[derive(Debug, Default)]
pub struct StubDetector {
    pub calls: AtomicUsize,
}

impl StubDetector {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl LabelDetector for StubDetector {
    fn input_kind(&self) -> InputKind {
        InputKind::Bytes
    }

    async fn detect(&self, _: ImageInput, _: &DetectOptions) -> Result<Findings, DetectError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Findings::labels(vec![Label { confidence: Confidence::from_probability(0.99), ..label("Stub") }]))
    }
}

/// Fails transiently for images with these exact bytes; otherwise answers like [`StubDetector`].
#[derive(Debug, Default)]
pub struct FailFor {
    pub images: Mutex<Vec<Bytes>>,
}

impl FailFor {
    pub fn fail(&self, image: impl Into<Bytes>) {
        self.images.lock().unwrap_or_else(|p| p.into_inner()).push(image.into());
    }
}

#[async_trait]
impl LabelDetector for FailFor {
    fn input_kind(&self) -> InputKind {
        InputKind::Bytes
    }

    async fn detect(&self, image: ImageInput, options: &DetectOptions) -> Result<Findings, DetectError> {
        if let ImageInput::Bytes { bytes, .. } = &image
            && self.images.lock().unwrap_or_else(|p| p.into_inner()).contains(bytes)
        {
            return Err(DetectError::Transient("injected for this image".into()));
        }
        StubDetector::default().detect(image, options).await
    }
}

/// Fails transiently with the given probability (seeded, so a run is reproducible), otherwise
/// delegates.
#[derive(Debug)]
pub struct FlakyDetector {
    inner: Arc<dyn LabelDetector>,
    failure_rate: f64,
    rng: Mutex<rand::rngs::StdRng>,
    pub failures: AtomicUsize,
}

impl FlakyDetector {
    pub fn new(inner: Arc<dyn LabelDetector>, failure_rate: f64, seed: u64) -> Self {
        Self {
            inner,
            failure_rate,
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            failures: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl LabelDetector for FlakyDetector {
    fn input_kind(&self) -> InputKind {
        self.inner.input_kind()
    }

    async fn detect(&self, image: ImageInput, options: &DetectOptions) -> Result<Findings, DetectError> {
        let fail = self.rng.lock().map(|mut r| r.random_bool(self.failure_rate)).unwrap_or(false);
        if fail {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(DetectError::Transient("injected transient failure".into()));
        }
        self.inner.detect(image, options).await
    }
}
