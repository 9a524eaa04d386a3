//! S3 event notifications as the worker's queue receives them (through the job topic, delivered
//! raw, or in an SNS envelope, which [`delivery_from_sqs`](super::delivery_from_sqs) has already
//! taken off).
//!
//! Two shapes arrive: `{"Records": [...]}`, one record per created object, and the one
//! `s3:TestEvent` S3 sends when a notification configuration is written, which has no records and
//! is only acknowledged. Keys arrive URL-encoded, and not the same way everywhere: AWS writes a
//! space as `+`, LocalStack as `%20`; both decode here, `+` first, so a literal plus (`%2B`) stays
//! one. `aws_lambda_events`' `url_decoded_key` is not used: AWS never sends it.

use serde::Deserialize;

/// What an S3 notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Notification {
    /// The configuration's test message: nothing to do.
    Test,
    /// Objects created.
    Created(Vec<CreatedObject>),
}

/// One created object, its key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedObject {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// What tells this upload of the object from another under the same key, and is the same in
    /// a duplicated notification: the version id where the bucket keeps versions, else the ETag
    /// with the event's sequencer (the same bytes uploaded again are another upload).
    pub version: String,
    /// The content's ETag, unquoted, when the notification names it.
    pub etag: Option<String>,
}

/// Why a body that looked like an S3 notification could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an unreadable S3 notification: {0}")]
pub struct InvalidNotification(pub String);

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Records")]
    records: Option<Vec<serde_json::Value>>,
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "Service")]
    service: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_source: String,
    event_name: String,
    s3: Entity,
}

#[derive(Deserialize)]
struct Entity {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    key: String,
    #[serde(default)]
    size: u64,
    e_tag: Option<String>,
    version_id: Option<String>,
    sequencer: Option<String>,
}

/// The notification in `body`, `None` if it is not one (a message of labelq's own), or why it
/// cannot be read. Records of other events than object creation are left out.
pub fn parse_s3_notification(body: &str) -> Option<Result<S3Notification, InvalidNotification>> {
    let envelope: Envelope = serde_json::from_str(body).ok()?;
    if envelope.service.as_deref() == Some("Amazon S3") && envelope.event.as_deref() == Some("s3:TestEvent") {
        return Some(Ok(S3Notification::Test));
    }
    let records = envelope.records?;
    let mut created = Vec::new();
    for record in records {
        let record: Record = match serde_json::from_value(record) {
            Ok(record) => record,
            Err(e) => return Some(Err(InvalidNotification(format!("a record: {e}")))),
        };
        if record.event_source != "aws:s3" {
            return Some(Err(InvalidNotification(format!("an event from {:?}", record.event_source))));
        }
        if !record.event_name.starts_with("ObjectCreated:") {
            continue;
        }
        let object = record.s3.object;
        let key = match decode_key(&object.key) {
            Ok(key) => key,
            Err(e) => return Some(Err(e)),
        };
        let etag = object.e_tag.map(|e| e.trim_matches('"').to_owned()).filter(|e| !e.is_empty());
        let sequencer = object.sequencer.filter(|s| !s.is_empty());
        let version = match (object.version_id.filter(|v| !v.is_empty() && v != "null"), &etag, sequencer) {
            (Some(version), _, _) => version,
            (None, Some(etag), Some(sequencer)) => format!("{etag}-{sequencer}"),
            (None, Some(etag), None) => etag.clone(),
            (None, None, Some(sequencer)) => sequencer,
            _ => return Some(Err(InvalidNotification(format!("no version, ETag or sequencer for {key:?}")))),
        };
        created.push(CreatedObject { bucket: record.s3.bucket.name, key, size: object.size, version, etag });
    }
    Some(Ok(S3Notification::Created(created)))
}

/// Decodes a key as S3 notifications encode it: `+` is a space, `%XX` a byte, the bytes UTF-8.
pub fn decode_key(encoded: &str) -> Result<String, InvalidNotification> {
    let invalid = || InvalidNotification(format!("the key {encoded:?} is not URL-encoded UTF-8"));
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut input = encoded.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let high = input.next().and_then(hex_value).ok_or_else(invalid)?;
                let low = input.next().and_then(hex_value).ok_or_else(invalid)?;
                bytes.push(high << 4 | low);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).map_err(|_| invalid())
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(key: &str) -> String {
        serde_json::json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b", "arn": "arn:aws:s3:::b"},
                   "object": {"key": key, "size": 1234, "eTag": "abc", "sequencer": "00A"}}
        }]})
        .to_string()
    }

    #[test]
    fn keys_decode_the_way_aws_and_localstack_encode_them() {
        for (encoded, decoded) in [
            ("drops/a+b.jpg", "drops/a b.jpg"),
            ("drops/a%20b.jpg", "drops/a b.jpg"),
            ("drops/a%2Bb.jpg", "drops/a+b.jpg"),
            ("drops/photo+%281%29.jpg", "drops/photo (1).jpg"),
            ("drops/%C3%A9t%C3%A9/%E6%9D%B1%E4%BA%AC.png", "drops/été/東京.png"),
        ] {
            assert_eq!(decode_key(encoded).unwrap(), decoded, "{encoded}");
        }
        for bad in ["a%2", "a%zz", "%FF%FE"] {
            assert!(decode_key(bad).is_err(), "{bad:?} decoded");
        }
    }

    #[test]
    fn a_created_object_is_read_with_its_bucket_size_and_version() {
        let Some(Ok(S3Notification::Created(objects))) = parse_s3_notification(&created("drops/a+b.jpg")) else {
            panic!("not read");
        };
        assert_eq!(
            objects,
            vec![CreatedObject {
                bucket: "b".into(),
                key: "drops/a b.jpg".into(),
                size: 1234,
                version: "abc-00A".into(),
                etag: Some("abc".into()),
            }]
        );
    }

    #[test]
    fn the_same_bytes_uploaded_again_are_another_version_and_a_duplicate_event_the_same() {
        let version = |body: &str| match parse_s3_notification(body) {
            Some(Ok(S3Notification::Created(objects))) => objects[0].version.clone(),
            other => panic!("{other:?}"),
        };
        let first = created("k");
        assert_eq!(version(&first), version(&first.clone()));
        assert_ne!(version(&first), version(&first.replace("\"00A\"", "\"00B\"")));
        // A versioned bucket's version id says it alone.
        let versioned = first.replace("\"sequencer\"", "\"versionId\": \"v9\", \"sequencer\"");
        assert_eq!(version(&versioned), "v9");
    }

    #[test]
    fn the_test_event_is_recognised_and_labelqs_own_messages_are_not_notifications() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-03T12:00:00.000Z","Bucket":"b","RequestId":"r","HostId":"h"}"#;
        assert_eq!(parse_s3_notification(test), Some(Ok(S3Notification::Test)));
        assert_eq!(parse_s3_notification(r#"{"type":"image_submitted","job_id":"x"}"#), None);
        assert_eq!(parse_s3_notification("not json"), None);
    }

    #[test]
    fn other_events_are_skipped_and_broken_records_refused() {
        let removed = created("k").replace("ObjectCreated:Put", "ObjectRemoved:Delete");
        assert_eq!(parse_s3_notification(&removed), Some(Ok(S3Notification::Created(vec![]))));
        let broken = r#"{"Records":[{"eventSource":"aws:s3"}]}"#;
        assert!(matches!(parse_s3_notification(broken), Some(Err(_))));
        let other = created("k").replace("aws:s3", "aws:sqs");
        assert!(matches!(parse_s3_notification(&other), Some(Err(_))));
    }
}
