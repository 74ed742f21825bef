//! Per-log settings: segment sizes, retention, durability. The broker keeps
//! one per topic (persisted in topic.json) with broker-wide defaults.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_protocol::batch::BatchHeader;

use super::StorageError;

/// When appended data is flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Before a durable produce is acknowledged (group commit). Default.
    #[default]
    Always,
    /// By a timer: up to this much acknowledged data can be lost on power loss.
    Interval(Duration),
    /// Only on segment roll and clean shutdown: the OS decides.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(|ms| Self::Interval(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    format!("invalid fsync mode `{s}`: expected always, interval:MS (MS > 0) or never")
                }),
        }
    }
}

impl Serialize for FsyncPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FsyncPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Which timestamp records carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampType {
    /// The producer's timestamps.
    #[default]
    Create,
    /// The broker's clock at append.
    LogAppend,
}

/// Settings of one log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Roll to a new segment past this size; also the address space mapped
    /// per segment. At most 2 GiB (positions are `u32`).
    pub segment_bytes: u64,
    /// Roll a non-empty segment this old (ms), whatever its size.
    pub segment_ms: u64,
    /// Delete sealed segments whose newest record is older (ms); 0 = keep forever.
    pub retention_ms: u64,
    /// Delete the oldest sealed segments while the log is larger; 0 = no limit.
    pub retention_bytes: u64,
    /// Durability of appends.
    pub fsync: FsyncPolicy,
    /// Largest batch accepted (a batch must also fit in one segment).
    pub max_message_bytes: u32,
    /// Bytes of log between sparse index entries.
    pub index_interval_bytes: u32,
    /// Largest step of disk reservation ahead of the write position.
    pub segment_preallocate_bytes: u64,
    /// Producer timestamps or broker append time.
    pub message_timestamp: TimestampType,
    /// Forget an idempotent producer after this long without a batch (ms):
    /// its retries are no longer recognised. Must exceed the producers'
    /// delivery timeout (2 minutes by default).
    pub producer_expiry_ms: u64,
    /// Idempotent producers remembered per partition; past it the least
    /// recently active one is forgotten (see `storage::producers`).
    pub max_producers_per_partition: u32,
    /// `create` topics: refuse a batch whose first timestamp is more than
    /// this far behind the broker's clock (ms; 0 = no limit, Kafka's
    /// default too: old data may be loaded on purpose).
    pub message_timestamp_before_max_ms: u64,
    /// `create` topics: refuse a batch whose largest timestamp is more than
    /// this far ahead of the broker's clock (ms; 0 = no limit). A record
    /// from the future would pin its segment past retention.
    pub message_timestamp_after_max_ms: u64,
}

/// Largest allowed `segment_bytes`.
pub const MAX_SEGMENT_BYTES: u64 = 2 << 30;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: 0,
            fsync: FsyncPolicy::Always,
            max_message_bytes: 8 << 20,
            index_interval_bytes: 4096,
            segment_preallocate_bytes: 32 << 20,
            message_timestamp: TimestampType::Create,
            producer_expiry_ms: 24 * 3600 * 1000,
            max_producers_per_partition: 10_000,
            message_timestamp_before_max_ms: 0,
            message_timestamp_after_max_ms: 3600 * 1000,
        }
    }
}

impl LogConfig {
    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), String> {
        if !(4096..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(format!("segment_bytes must be between 4096 and {MAX_SEGMENT_BYTES}"));
        }
        // A batch must also fit in one segment: the effective limit is
        // min(max_message_bytes, segment_bytes), enforced on append.
        if self.max_message_bytes < 64 {
            return Err("max_message_bytes must be at least 64".into());
        }
        if self.index_interval_bytes == 0 || self.segment_ms == 0 {
            return Err("index_interval_bytes and segment_ms must be positive".into());
        }
        if self.max_producers_per_partition == 0 {
            return Err("max_producers_per_partition must be positive".into());
        }
        Ok(())
    }

    /// Checks a produced batch's timestamps against the broker's clock
    /// `now_ms` (only for `create` topics: `log_append` ones are stamped
    /// with the broker's clock anyway).
    ///
    /// The header's `first_timestamp` is checked against
    /// `message_timestamp_before_max_ms` and its `max_timestamp` against
    /// `message_timestamp_after_max_ms`. Records in a batch may be out of
    /// order, so a record may be older than the first one, and the header's
    /// maximum is not checked against the records: those per-record
    /// timestamps are not checked. They cannot move retention or the time
    /// index, which read only the header's `max_timestamp`; they can only
    /// mislead the consumers that read them.
    ///
    /// # Errors
    ///
    /// [`StorageError::InvalidTimestamp`] naming the timestamp outside the
    /// window.
    pub fn check_timestamps(&self, header: &BatchHeader, now_ms: i64) -> Result<(), StorageError> {
        if self.message_timestamp != TimestampType::Create {
            return Ok(());
        }
        let window = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
        let invalid = |timestamp: i64| StorageError::InvalidTimestamp {
            timestamp,
            now_ms,
            before_max_ms: self.message_timestamp_before_max_ms,
            after_max_ms: self.message_timestamp_after_max_ms,
        };
        let before = self.message_timestamp_before_max_ms;
        if before > 0 && header.first_timestamp < now_ms.saturating_sub(window(before)) {
            return Err(invalid(header.first_timestamp));
        }
        let after = self.message_timestamp_after_max_ms;
        if after > 0 && header.max_timestamp > now_ms.saturating_add(window(after)) {
            return Err(invalid(header.max_timestamp));
        }
        Ok(())
    }

    /// Sets one key from text (topic config entries; the keys are
    /// [`CONFIG_KEYS`]), then checks the whole config.
    ///
    /// # Errors
    /// An unknown key, a value that does not parse, or a config that fails
    /// [`validate`](Self::validate), as a message for the user.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let key = config_key(key).ok_or_else(|| format!("unknown topic config `{key}`"))?;
        (key.set)(self, value)?;
        self.validate()
    }

    /// Every key and its value as text, in [`CONFIG_KEYS`] order (the
    /// inverse of [`set`](Self::set)).
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        CONFIG_KEYS.iter().map(|k| (k.name, (k.get)(self))).collect()
    }
}

impl fmt::Display for TimestampType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimestampType::Create => "create",
            TimestampType::LogAppend => "log_append",
        })
    }
}

impl FromStr for TimestampType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "create" => Ok(Self::Create),
            "log_append" => Ok(Self::LogAppend),
            _ => Err(format!("message_timestamp: `{s}` is not create or log_append")),
        }
    }
}

/// One topic config key. Its name is also its field in `topic.json` (the
/// serde name of the [`LogConfig`] field; a test holds them equal) and its
/// key for `sluice topic create/alter --config KEY=VALUE`; `topic describe`
/// lists [`LogConfig::entries`]. Its default is [`LogConfig::default`]'s.
#[derive(Debug, Clone, Copy)]
pub struct ConfigKey {
    /// The key.
    pub name: &'static str,
    /// What it sets, for help text.
    pub description: &'static str,
    /// Its value in a config, as text.
    pub get: fn(&LogConfig) -> String,
    /// Sets it from text (without validating the whole config).
    pub set: fn(&mut LogConfig, &str) -> Result<(), String>,
}

impl ConfigKey {
    /// Its default value, as text.
    pub fn default_value(&self) -> String {
        (self.get)(&LogConfig::default())
    }
}

/// A number in the range of its field.
fn number<T: TryFrom<u64>>(key: &str, v: &str) -> Result<T, String> {
    let n: u64 = v.parse().map_err(|_| format!("{key}: `{v}` is not a non-negative integer"))?;
    T::try_from(n).map_err(|_| format!("{key} too large"))
}

/// A [`ConfigKey`] for the [`LogConfig`] field of the same name, read with
/// `number` or with the field type's `FromStr` (`text`).
macro_rules! config_key {
    ($field:ident, number, $description:expr) => {
        ConfigKey {
            name: stringify!($field),
            description: $description,
            get: |c| c.$field.to_string(),
            set: |c, v| Ok(c.$field = number(stringify!($field), v)?),
        }
    };
    ($field:ident, text, $description:expr) => {
        ConfigKey {
            name: stringify!($field),
            description: $description,
            get: |c| c.$field.to_string(),
            set: |c, v| Ok(c.$field = v.parse()?),
        }
    };
}

/// Every topic config key, in the order `topic describe` lists them.
/// Adding a key: a [`LogConfig`] field, its default, and a line here.
pub const CONFIG_KEYS: &[ConfigKey] = &[
    config_key!(segment_bytes, number, "Roll to a new segment past this size (bytes)"),
    config_key!(segment_ms, number, "Roll a non-empty segment this old (ms)"),
    config_key!(retention_ms, number, "Delete sealed segments older than this (ms; 0 = forever)"),
    config_key!(
        retention_bytes,
        number,
        "Delete the oldest sealed segments past this size (bytes; 0 = no limit)"
    ),
    config_key!(fsync, text, "Durability: always | interval:MS | never"),
    config_key!(max_message_bytes, number, "Largest batch accepted (bytes)"),
    config_key!(index_interval_bytes, number, "Bytes of log between sparse index entries"),
    config_key!(
        segment_preallocate_bytes,
        number,
        "Largest step of disk reservation ahead of the write position"
    ),
    config_key!(producer_expiry_ms, number, "Forget an idle idempotent producer after this long (ms)"),
    config_key!(max_producers_per_partition, number, "Idempotent producers remembered per partition"),
    config_key!(
        message_timestamp_before_max_ms,
        number,
        "create topics: refuse batches older than this (ms; 0 = no limit)"
    ),
    config_key!(
        message_timestamp_after_max_ms,
        number,
        "create topics: refuse batches further ahead than this (ms; 0 = no limit)"
    ),
    config_key!(
        message_timestamp,
        text,
        "Record timestamps: create (the producer's) | log_append (the broker's)"
    ),
];

/// The key named `name`.
pub fn config_key(name: &str) -> Option<&'static ConfigKey> {
    CONFIG_KEYS.iter().find(|k| k.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_parses_and_prints() {
        for s in ["always", "never", "interval:250"] {
            assert_eq!(s.parse::<FsyncPolicy>().unwrap().to_string(), s);
        }
        for bad in ["", "sometimes", "interval:", "interval:0", "interval:-5"] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn set_and_entries_round_trip() {
        let mut c = LogConfig::default();
        for (k, v) in
            (LogConfig { fsync: FsyncPolicy::Never, retention_ms: 5, ..LogConfig::default() }).entries()
        {
            c.set(k, &v).unwrap();
        }
        assert_eq!(c.fsync, FsyncPolicy::Never);
        assert_eq!(c.retention_ms, 5);
        assert!(c.set("nope", "1").is_err());
        assert!(c.set("segment_bytes", "12").is_err());
        assert!(c.set("retention_ms", "-1").is_err());
    }

    #[test]
    fn timestamps_outside_the_window_are_refused_on_create_topics_only() {
        let now = 1_700_000_000_000;
        let header = |first: i64, max: i64| {
            let mut b = sluice_protocol::batch::BatchBuilder::new();
            b.append(first, None, Some(b"v"), &[]);
            b.append(max, None, Some(b"v"), &[]);
            BatchHeader::parse(&b.build()).unwrap()
        };
        let hour = 3_600_000;
        let c = LogConfig::default();
        assert!(
            c.check_timestamps(&header(now - 365 * 24 * hour, now), now).is_ok(),
            "no lower limit by default"
        );
        assert!(c.check_timestamps(&header(now, now + hour), now).is_ok(), "one hour ahead is the edge");
        assert!(matches!(
            c.check_timestamps(&header(now, now + 2 * hour), now),
            Err(StorageError::InvalidTimestamp { timestamp, .. }) if timestamp == now + 2 * hour
        ));
        let c = LogConfig { message_timestamp_before_max_ms: hour as u64, ..LogConfig::default() };
        assert!(matches!(
            c.check_timestamps(&header(now - 2 * hour, now), now),
            Err(StorageError::InvalidTimestamp { timestamp, .. }) if timestamp == now - 2 * hour
        ));
        let off = LogConfig { message_timestamp_after_max_ms: 0, ..LogConfig::default() };
        assert!(off.check_timestamps(&header(now, i64::MAX), now).is_ok(), "0 = no limit");
        let append = LogConfig { message_timestamp: TimestampType::LogAppend, ..LogConfig::default() };
        assert!(
            append.check_timestamps(&header(now, now + 2 * hour), now).is_ok(),
            "the broker stamps these"
        );
    }

    #[test]
    fn serde_uses_text_for_fsync() {
        let c = LogConfig { fsync: "interval:100".parse().unwrap(), ..LogConfig::default() };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"fsync\":\"interval:100\""));
        assert_eq!(serde_json::from_str::<LogConfig>(&json).unwrap(), c);
    }

    #[test]
    fn the_key_table_names_every_topic_json_field_and_round_trips() {
        let json = serde_json::to_value(LogConfig::default()).unwrap();
        let fields: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut names: Vec<&str> = CONFIG_KEYS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        let mut fields = fields;
        fields.sort_unstable();
        assert_eq!(names, fields, "CONFIG_KEYS and topic.json name the same keys");
        let changed = LogConfig {
            fsync: FsyncPolicy::Interval(Duration::from_millis(7)),
            message_timestamp: TimestampType::LogAppend,
            retention_ms: 5,
            max_message_bytes: 999,
            ..LogConfig::default()
        };
        let mut parsed = LogConfig::default();
        for (k, v) in changed.entries() {
            parsed.set(k, &v).unwrap();
        }
        assert_eq!(parsed, changed);
        assert_eq!(config_key("fsync").unwrap().default_value(), "always");
        assert_eq!(LogConfig::default().set("nope", "1").unwrap_err(), "unknown topic config `nope`");
        let mut c = LogConfig::default();
        assert_eq!(c.set("max_message_bytes", "5000000000").unwrap_err(), "max_message_bytes too large");
        assert_eq!(c.set("segment_ms", "x").unwrap_err(), "segment_ms: `x` is not a non-negative integer");
        assert_eq!(
            c.set("message_timestamp", "x").unwrap_err(),
            "message_timestamp: `x` is not create or log_append"
        );
    }
}
