//! TensorBoard event files for a run (`[output] tensorboard = true`): per epoch, the
//! losses, accuracies (or perplexity), step time and each slot's alpha, contribution and
//! seed parameter count as scalars (step = epoch), and the epoch's lifecycle events as
//! text. Written under `tensorboard/` in the run folder, one file per `esper run` (a
//! resumed run adds a file; TensorBoard reads the folder as one run).
//!
//! The file is TensorBoard's record format: each record is its length (u64, little
//! endian), the masked CRC32C of those 8 bytes, the data (an `Event` protobuf), and the
//! masked CRC32C of the data. The messages are the few fields of TensorFlow's
//! `event.proto` and `summary.proto` this writer sets, declared with `prost`.

use anyhow::{Context, Result};
use esper_runtime::{
    run_folder::{files, RunFile},
    train::report::EpochRecord,
};
use prost::Message;
use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

/// `tensorflow.Event`: a time, a step and one of a file version or a summary.
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<Value>,
}

/// `tensorflow.Summary.Value`: a scalar (`simple_value`) or a tensor (text).
#[derive(Clone, PartialEq, prost::Message)]
struct Value {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
    #[prost(message, optional, tag = "8")]
    tensor: Option<TensorProto>,
    #[prost(message, optional, tag = "9")]
    metadata: Option<SummaryMetadata>,
}

/// `tensorflow.SummaryMetadata`: which TensorBoard plugin shows the value.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PluginData {
    #[prost(string, tag = "1")]
    plugin_name: String,
}

/// `tensorflow.TensorProto`, as a scalar string tensor.
#[derive(Clone, PartialEq, prost::Message)]
struct TensorProto {
    /// `DT_STRING`.
    #[prost(int32, tag = "1")]
    dtype: i32,
    #[prost(message, optional, tag = "2")]
    tensor_shape: Option<TensorShapeProto>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto` with no dimensions: a scalar.
#[derive(Clone, PartialEq, prost::Message)]
struct TensorShapeProto {}

const DT_STRING: i32 = 7;

/// The masked CRC32C of TensorBoard's record format.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One record: length, its masked CRC, the data, the data's masked CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The scalars of one epoch, as (tag, value). Per slot: `slot/<id>/alpha`, and, when
/// recorded, `slot/<id>/contribution` and `slot/<id>/seed_parameters`.
pub fn scalars(r: &EpochRecord) -> Vec<(String, f64)> {
    let mut out = vec![
        ("loss/train".to_string(), r.train_loss),
        ("loss/val".to_string(), r.val_loss),
        ("accuracy/train".to_string(), r.train_accuracy),
        ("accuracy/val".to_string(), r.val_accuracy),
        ("time/epoch_s".to_string(), r.seconds),
    ];
    if let Some(p) = r.val_perplexity {
        out.push(("perplexity/val".to_string(), p));
    }
    if r.steps > 0 {
        out.push(("time/step_ms".to_string(), r.train_seconds * 1000.0 / r.steps as f64));
    }
    for s in &r.slots {
        out.push((format!("slot/{}/alpha", s.slot), s.alpha));
        if let Some(c) = s.contribution {
            out.push((format!("slot/{}/contribution", s.slot), c));
        }
        if let Some(seed) = &s.seed {
            out.push((format!("slot/{}/seed_parameters", s.slot), seed.parameters as f64));
        }
    }
    out
}

/// The tag the lifecycle events of an epoch are written under (TensorBoard's text tab).
pub const EVENTS_TAG: &str = "lifecycle/events";

/// An event file being written.
pub struct TensorBoardWriter {
    path: PathBuf,
    file: File,
}

impl TensorBoardWriter {
    /// Creates a new event file under `run_dir/tensorboard/` (the folder made if
    /// missing; a link in its place or at the file is refused) and writes its header.
    pub fn create(run_dir: &Path) -> Result<Self> {
        let dir = RunFile::TensorBoard.path(run_dir);
        files::refuse_link(&dir)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let path = dir.join(format!("events.out.tfevents.{}.esper.{}", now.as_secs(), std::process::id()));
        let file = files::open_append(&path)?;
        let mut writer = Self { path, file };
        writer.write(&Event {
            wall_time: now.as_secs_f64(),
            file_version: Some("brain.Event:2".into()),
            ..Default::default()
        })?;
        Ok(writer)
    }

    /// Writes epoch `record`: its scalars, and its lifecycle events as one text value.
    pub fn epoch(&mut self, record: &EpochRecord) -> Result<()> {
        let wall_time = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let step = record.epoch as i64;
        let value = scalars(record)
            .into_iter()
            .map(|(tag, v)| Value { tag, simple_value: Some(v as f32), ..Default::default() })
            .collect();
        self.write(&Event { wall_time, step, summary: Some(Summary { value }), ..Default::default() })?;
        if !record.events.is_empty() {
            // Markdown: one line per event.
            let text: Vec<String> = record.events.iter().map(|e| format!("- {e}")).collect();
            let value = Value {
                tag: EVENTS_TAG.into(),
                tensor: Some(TensorProto {
                    dtype: DT_STRING,
                    tensor_shape: Some(TensorShapeProto {}),
                    string_val: vec![text.join("\n").into_bytes()],
                }),
                metadata: Some(SummaryMetadata { plugin_data: Some(PluginData { plugin_name: "text".into() }) }),
                ..Default::default()
            };
            self.write(&Event {
                wall_time,
                step,
                summary: Some(Summary { value: vec![value] }),
                ..Default::default()
            })?;
        }
        self.file.flush().with_context(|| format!("writing {}", self.path.display()))
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        self.file.write_all(&record(&event.encode_to_vec())).with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_framed_with_tensorflows_masked_crc32c() {
        // The CRC32C check value of "123456789" is 0xe3069283; masked as TensorFlow does.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8));
        let r = record(b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[8..12], &masked_crc(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(&r[15..], &masked_crc(b"abc").to_le_bytes());
    }

    #[test]
    fn a_text_run_adds_its_perplexity_and_an_epoch_without_steps_no_step_time() {
        use esper_runtime::{
            lifecycle::SeedStage,
            train::report::{SeedRecord, SlotRecord},
        };
        let slot = SlotRecord {
            slot: "r0c1".into(),
            stage: SeedStage::Blending,
            alpha: 0.5,
            contribution: Some(-0.25),
            seed: Some(SeedRecord { blueprint: "norm".into(), epochs_in_stage: 2, parameters: 96 }),
        };
        let record = EpochRecord {
            epoch: 3,
            train_loss: 2.0,
            train_accuracy: 40.0,
            val_loss: 1.0,
            val_accuracy: 50.0,
            val_perplexity: Some(1f64.exp()),
            seconds: 4.0,
            steps: 0,
            train_seconds: 0.0,
            slots: vec![
                slot,
                SlotRecord {
                    slot: "r1c1".into(),
                    stage: SeedStage::Dormant,
                    alpha: 0.0,
                    contribution: None,
                    seed: None,
                },
            ],
            events: vec![],
        };
        let got: Vec<(String, f64)> = scalars(&record);
        let want: Vec<(String, f64)> = [
            ("loss/train", 2.0),
            ("loss/val", 1.0),
            ("accuracy/train", 40.0),
            ("accuracy/val", 50.0),
            ("time/epoch_s", 4.0),
            ("perplexity/val", 1f64.exp()),
            ("slot/r0c1/alpha", 0.5),
            ("slot/r0c1/contribution", -0.25),
            ("slot/r0c1/seed_parameters", 96.0),
            ("slot/r1c1/alpha", 0.0),
        ]
        .into_iter()
        .map(|(t, v)| (t.to_string(), v))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_event_encodes_as_tensorflows_protobuf() {
        // wall_time 1.0 (field 1, fixed64), step 2 (field 2, varint), file_version "v" (field 3).
        let e = Event { wall_time: 1.0, step: 2, file_version: Some("v".into()), summary: None };
        let mut expected = vec![0x09];
        expected.extend_from_slice(&1.0f64.to_le_bytes());
        expected.extend_from_slice(&[0x10, 0x02, 0x1a, 0x01, b'v']);
        assert_eq!(e.encode_to_vec(), expected);
        // A scalar: value (field 1 of Summary) holding tag (1) and simple_value (2, fixed32).
        let s = Summary { value: vec![Value { tag: "a".into(), simple_value: Some(0.5), ..Default::default() }] };
        let mut expected = vec![0x0a, 8, 0x0a, 0x01, b'a', 0x15];
        expected.extend_from_slice(&0.5f32.to_le_bytes());
        assert_eq!(s.encode_to_vec(), expected);
    }
}
