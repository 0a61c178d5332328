//! The cache commands shared by the one-shot CLI and the REPL, and how values print.

use clap::Subcommand;
use persistent_cache::{Expiry, PersistentCache, Stats};
use serde::{Serialize, Serializer};
use serde_json::Value as Json;

/// One cache operation.
#[derive(Subcommand, Debug, Clone)]
pub enum Op {
    /// Print the value stored under KEY as JSON (exit 1 on a miss).
    Get {
        key: String,
        /// Print the stored bytes as they are, not decoded from CBOR (e.g. a plugin's values).
        #[arg(long)]
        raw: bool,
    },
    /// Store VALUE under KEY: parsed as JSON when it is valid JSON, else stored as a string.
    Set {
        key: String,
        value: String,
        /// When it expires: a duration (300, 300s, 5m, 1h 30m), "never", or "default"
        /// [default: $CACHE_CONTENT_TTL, else never]. 0 is refused.
        #[arg(long, value_name = "TTL")]
        ttl: Option<Expiry>,
    },
    /// Remove KEY (exit 1 if it was not there).
    Delete { key: String },
    /// Remove every entry.
    Clear,
    /// Entries, volume, directory, size limit, hits, misses, expired and evicted.
    Stats,
    /// List the keys that start with PREFIX (all keys without one), sorted, one per line.
    ///
    /// Each key prints on one line, escaped: a backslash as \\, a newline as \n, a carriage
    /// return as \r, a tab as \t, NUL as \0 and any other control character (or U+2028, U+2029)
    /// as \u{HEX}; every other character as it is. No keys: nothing is printed, exit 0 (the REPL
    /// says "(no keys)" on stderr). --json prints one JSON array of strings; -0 prints each key
    /// as it is, ended by a NUL byte (for xargs -0).
    Keys {
        prefix: Option<String>,
        /// End each key with a NUL byte instead of a newline, unescaped.
        #[arg(short = '0', long = "null", conflicts_with = "json")]
        null: bool,
    },
    /// Store VALUE under KEY only if KEY is absent (exit 1 if it was there).
    Add {
        key: String,
        value: String,
        /// When it expires: a duration (300, 300s, 5m, 1h 30m), "never", or "default"
        /// [default: $CACHE_CONTENT_TTL, else never]. 0 is refused.
        #[arg(long, value_name = "TTL")]
        ttl: Option<Expiry>,
    },
    /// Mark KEY recently used and give it a new expiry from now (exit 1 if absent).
    Touch {
        key: String,
        /// When it expires: a duration (300, 300s, 5m, 1h 30m), "never", or "default"
        /// [default: $CACHE_CONTENT_TTL, else never]. 0 is refused.
        #[arg(long, value_name = "TTL")]
        ttl: Option<Expiry>,
    },
    /// Print the value under KEY as JSON and remove it (exit 1 on a miss).
    Pop { key: String },
    /// Add DELTA (default 1, may be negative) to the integer under KEY and print the result.
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
        /// The value an absent KEY starts from.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        default: i64,
        /// When a counter this call creates expires (an existing one keeps its expiry): a
        /// duration (60, 60s, 1m), "never", or "default" [default: $CACHE_CONTENT_TTL, else
        /// never]. 0 is refused.
        #[arg(long, value_name = "TTL")]
        ttl: Option<Expiry>,
    },
    /// Remove every key that starts with PREFIX and print how many there were.
    DeletePrefix { prefix: String },
    /// Remove every expired entry now and print how many there were.
    Expire,
    /// Make every write so far durable (synced to disk) and write the index snapshot.
    Flush,
}

/// What an operation produced.
pub enum Outcome {
    /// `get`: the value, or `None` on a miss.
    Value(Option<Json>),
    /// `get --raw`: the stored bytes, or `None` on a miss.
    Raw(Option<Vec<u8>>),
    /// `set`, `clear`, `flush`.
    Done,
    /// `delete`: whether the key was there.
    Deleted(bool),
    Stats(Stats),
    /// `keys`: the keys, and whether `-0` asked for NUL-terminated output.
    Keys {
        keys: Vec<String>,
        null: bool,
    },
    /// `add`: whether the value was stored (the key was absent).
    Added(bool),
    /// `touch`: whether the key was there.
    Touched(bool),
    /// `incr`: the new value; `delete-prefix`, `expire`: how many entries were removed.
    Number(i64),
}

impl Op {
    /// The key the operation names, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Op::Get { key, .. }
            | Op::Set { key, .. }
            | Op::Delete { key }
            | Op::Add { key, .. }
            | Op::Touch { key, .. }
            | Op::Pop { key }
            | Op::Incr { key, .. } => Some(key),
            Op::Clear
            | Op::Stats
            | Op::Keys { .. }
            | Op::DeletePrefix { .. }
            | Op::Expire
            | Op::Flush => None,
        }
    }

    /// Runs the operation on `cache`.
    pub async fn execute(&self, cache: &PersistentCache) -> anyhow::Result<Outcome> {
        Ok(match self {
            Op::Get { key, raw: true } => Outcome::Raw(cache.get_raw(key).await?),
            Op::Get { key, raw: false } => Outcome::Value(match cache.get_raw(key).await? {
                Some(bytes) => Some(cbor_to_json(&bytes)?),
                None => None,
            }),
            Op::Set { key, value, ttl } => {
                let expiry = ttl.unwrap_or_default();
                cache
                    .set_with_ttl(key, &ValueArg::new(value), expiry)
                    .await?;
                Outcome::Done
            }
            Op::Delete { key } => Outcome::Deleted(cache.delete(key).await?),
            Op::Clear => {
                cache.clear().await?;
                Outcome::Done
            }
            Op::Stats => Outcome::Stats(cache.stats().await?),
            Op::Keys { prefix, null } => Outcome::Keys {
                keys: cache.keys(prefix.as_deref().unwrap_or("")).await?,
                null: *null,
            },
            Op::Add { key, value, ttl } => {
                let expiry = ttl.unwrap_or_default();
                Outcome::Added(cache.add(key, &ValueArg::new(value), expiry).await?)
            }
            Op::Touch { key, ttl } => {
                Outcome::Touched(cache.touch(key, ttl.unwrap_or_default()).await?)
            }
            Op::Pop { key } => Outcome::Value(match cache.pop_raw(key).await? {
                Some(bytes) => Some(cbor_to_json(&bytes)?),
                None => None,
            }),
            Op::Incr {
                key,
                delta,
                default,
                ttl,
            } => {
                let expiry = ttl.unwrap_or_default();
                Outcome::Number(cache.incr_with_ttl(key, *delta, *default, expiry).await?)
            }
            Op::DeletePrefix { prefix } => {
                Outcome::Number(count(cache.delete_prefix(prefix).await?))
            }
            Op::Expire => Outcome::Number(count(cache.expire().await?)),
            Op::Flush => {
                cache.flush().await?;
                Outcome::Done
            }
        })
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A command-line value: JSON when it parses as JSON, else the text as a string.
///
/// It serializes straight from the text (JSON transcoded to CBOR as it is parsed), never
/// through a `serde_json::Value` tree, which takes ~40 times the text for a dense array (a
/// 72-byte node per `0,`): the memory it needs is about the size of the encoded value. Arrays
/// and maps are therefore stored as indefinite-length CBOR; scalars and strings are the bytes a
/// tree would give.
pub struct ValueArg<'a> {
    text: &'a str,
    json: bool,
}

impl<'a> ValueArg<'a> {
    /// `text` as a value: JSON if it is one JSON document, else a string.
    ///
    /// Edge cases: the empty string and text with anything after the JSON document (`1 2`)
    /// are strings; JSON nested deeper than serde_json's limit (128) is a string; an object
    /// with a repeated key keeps every entry, in order (a reader that builds a map keeps the
    /// last, as `get` does).
    pub fn new(text: &'a str) -> Self {
        // Transcoded into nothing: the same parse `serialize` does, so it cannot fail there. Not
        // into ciborium: its error messages quote the inner one, so an error 128 levels deep
        // (serde_json's recursion limit) would be a message doubled 128 times.
        let mut json = serde_json::Deserializer::from_str(text);
        let mut sink = serde_json::Serializer::new(std::io::sink());
        let parsed = serde_transcode::transcode(&mut json, &mut sink);
        let json = parsed.is_ok() && json.end().is_ok();
        ValueArg { text, json }
    }
}

impl Serialize for ValueArg<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.json {
            let mut json = serde_json::Deserializer::from_str(self.text);
            serde_transcode::transcode(&mut json, serializer)
        } else {
            serializer.serialize_str(self.text)
        }
    }
}

/// Decodes a stored CBOR value for printing as JSON.
///
/// Values stored by Rust programs may hold what JSON lacks: byte strings print as arrays of
/// numbers, map keys that are not strings print as their JSON text, tags are dropped.
pub fn cbor_to_json(bytes: &[u8]) -> anyhow::Result<Json> {
    let value: ciborium::Value = ciborium::from_reader(bytes)
        .map_err(|e| anyhow::anyhow!("the stored value is not valid CBOR: {e}"))?;
    Ok(to_json(value))
}

fn to_json(value: ciborium::Value) -> Json {
    use ciborium::Value as Cbor;
    match value {
        Cbor::Null => Json::Null,
        Cbor::Bool(b) => Json::Bool(b),
        Cbor::Integer(i) => {
            let i = i128::from(i);
            i64::try_from(i)
                .map(Json::from)
                .or_else(|_| u64::try_from(i).map(Json::from))
                .unwrap_or_else(|_| Json::String(i.to_string()))
        }
        Cbor::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        Cbor::Text(s) => Json::String(s),
        Cbor::Bytes(b) => Json::Array(b.into_iter().map(Json::from).collect()),
        Cbor::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Cbor::Map(entries) => Json::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Json::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Cbor::Tag(_, inner) => to_json(*inner),
        _ => Json::Null,
    }
}

/// How `keys` prints its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeysFormat {
    /// One escaped key per line (see [`escape_key`]).
    Lines,
    /// One JSON array of strings, then a newline.
    Json,
    /// Each key as it is, then a NUL byte.
    Null,
}

impl KeysFormat {
    /// The format `--json` and `-0` ask for (they cannot both be given).
    pub fn new(json: bool, null: bool) -> KeysFormat {
        match (json, null) {
            (true, _) => KeysFormat::Json,
            (false, true) => KeysFormat::Null,
            (false, false) => KeysFormat::Lines,
        }
    }
}

/// `keys` as `format` prints them, each ended by its terminator.
///
/// Edge cases: no keys → "" for [`KeysFormat::Lines`] and [`KeysFormat::Null`], "[]\n" for
/// [`KeysFormat::Json`].
pub fn format_keys(keys: &[String], format: KeysFormat) -> String {
    match format {
        KeysFormat::Lines => keys
            .iter()
            .map(|k| format!("{}\n", escape_key(k)))
            .collect(),
        KeysFormat::Json => format!("{}\n", Json::from(keys)),
        KeysFormat::Null => keys.iter().map(|k| format!("{k}\0")).collect(),
    }
}

/// `key` on one line, readable back without ambiguity: a backslash prints as `\\`, a control
/// character (and U+2028, U+2029) as its Rust escape (`\n`, `\r`, `\t`, `\0`, `\u{1b}`), every
/// other character as it is.
pub fn escape_key(key: &str) -> std::borrow::Cow<'_, str> {
    let escaped = |c: char| c == '\\' || c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !key.contains(escaped) {
        return key.into();
    }
    let mut out = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        if escaped(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Stats as a few human-readable lines.
pub fn human_stats(s: &Stats) -> String {
    let lookups = s.hits + s.misses;
    let hit_rate = if lookups == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", 100.0 * s.hits as f64 / lookups as f64)
    };
    format!(
        "directory:  {}\nentries:    {}\nvolume:     {} ({:.1}% of the limit)\nsize limit: {}\nhits:       {}\nmisses:     {}\nhit rate:   {hit_rate}\nexpired:    {}\nevicted:    {}\ndamaged:    {}\nplugins:    {} of a {} budget",
        s.directory.display(),
        s.entries,
        human_bytes(s.volume),
        100.0 * s.volume as f64 / s.size_limit.max(1) as f64,
        human_bytes(s.size_limit),
        s.hits,
        s.misses,
        s.expired,
        s.evicted,
        s.damaged,
        human_bytes(s.plugin_volume),
        human_bytes(s.plugin_budget),
    )
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {} ({n} bytes)", UNITS[unit])
    }
}

/// An error on one line: its message, then each cause whose text the line does not already
/// hold (a message that quotes its source, as a directory error quotes the OS error, is not
/// followed by it again), joined with ": ". Text over several lines is folded onto one.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = fold_lines(&cause.to_string());
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// `text` on one line: its lines trimmed and joined with a space, except after an opening and
/// before a closing bracket, so a pretty-printed list (`[\n    1,\n    2,\n]`, as wasmparser
/// writes the bytes it expected) reads `[1, 2]`.
fn fold_lines(text: &str) -> String {
    if !text.contains('\n') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let closing = line.starts_with([']', ')', '}']);
        if closing && out.ends_with(',') {
            out.pop();
        }
        if !(out.is_empty() || closing || out.ends_with(['[', '(', '{'])) {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// A clap message on one line: its first paragraph joined, without the "error: " prefix.
pub fn one_line(message: &str) -> String {
    let paragraph: Vec<&str> = message
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty())
        .collect();
    let joined = paragraph.join(" ");
    joined.strip_prefix("error: ").unwrap_or(&joined).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(value: &impl Serialize) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(value, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn values_are_json_when_they_parse_else_strings() {
        let stored = |text: &str| cbor_to_json(&cbor(&ValueArg::new(text))).unwrap();
        assert_eq!(stored("1"), Json::from(1));
        assert_eq!(stored(r#"{"a":[1,2]}"#), serde_json::json!({"a": [1, 2]}));
        assert_eq!(stored("hello world"), Json::from("hello world"));
        assert_eq!(stored("\"quoted\""), Json::from("quoted"));
        for text in [
            "",
            "1 2",
            "[1,",
            "{\"a\"}",
            "1e400",
            &format!("{}{}", "[".repeat(128), "]".repeat(128)),
        ] {
            assert_eq!(stored(text), Json::from(text), "{text:?}");
        }
    }

    #[test]
    fn transcoded_values_read_back_as_the_json_and_scalars_keep_their_bytes() {
        let scalars = [
            "0",
            "-7",
            "18446744073709551615",
            "-9223372036854775808",
            "1.5",
            "0.1",
            "-0.0",
            "true",
            "null",
            r#""é \u00e9 \n \ud83d\ude00""#,
        ];
        for text in scalars {
            let tree: Json = serde_json::from_str(text).unwrap();
            assert_eq!(cbor(&ValueArg::new(text)), cbor(&tree), "{text}");
        }
        let containers = [
            r#"{"z": 1, "a": [null, {"n": {}}, []], "m": -2.25}"#,
            " [ 1 , 2 ] ",
            &format!("{}{}", "[".repeat(127), "]".repeat(127)),
        ];
        for text in containers {
            let tree: Json = serde_json::from_str(text).unwrap();
            let stored = cbor(&ValueArg::new(text));
            assert_eq!(cbor_to_json(&stored).unwrap(), tree, "{text}");
        }
        // Arrays and maps are indefinite-length (0x9f/0xbf ... 0xff): lengths are not known
        // while streaming.
        assert_eq!(cbor(&ValueArg::new("[1]")), [0x9f, 0x01, 0xff]);
        // A repeated key: every entry is kept; reading it back keeps the last.
        let repeated = cbor(&ValueArg::new(r#"{"a": 1, "a": 2}"#));
        assert_eq!(
            cbor_to_json(&repeated).unwrap(),
            serde_json::json!({"a": 2})
        );
    }

    #[test]
    fn cbor_that_json_lacks_still_prints() {
        let mut bytes = Vec::new();
        let map = std::collections::BTreeMap::from([(1u8, serde_bytes_like(vec![1, 2]))]);
        ciborium::into_writer(&map, &mut bytes).unwrap();
        assert_eq!(
            cbor_to_json(&bytes).unwrap(),
            serde_json::json!({"1": [1, 2]})
        );
        assert!(cbor_to_json(&[0xff]).is_err());
    }

    fn serde_bytes_like(v: Vec<u8>) -> ciborium::Value {
        ciborium::Value::Bytes(v)
    }

    #[test]
    fn clap_messages_fold_to_one_line() {
        let message = "error: the following required arguments were not provided:\n  <KEY>\n  <VALUE>\n\nUsage: set <KEY> <VALUE>\n";
        assert_eq!(
            one_line(message),
            "the following required arguments were not provided: <KEY> <VALUE>"
        );
    }

    #[test]
    fn keys_print_one_per_line_escaped_or_as_json_or_nul_terminated() {
        let keys: Vec<String> = [
            "plain",
            "a\nb",
            "(empty)",
            "back\\slash",
            "t\tr\r\u{1b}\u{85}\u{2028}é",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            format_keys(&keys, KeysFormat::Lines),
            "plain\na\\nb\n(empty)\nback\\\\slash\nt\\tr\\r\\u{1b}\\u{85}\\u{2028}é\n"
        );
        let json: Vec<String> =
            serde_json::from_str(&format_keys(&keys, KeysFormat::Json)).unwrap();
        assert_eq!(json, keys);
        assert_eq!(format_keys(&keys[..2], KeysFormat::Null), "plain\0a\nb\0");
        assert_eq!(format_keys(&[], KeysFormat::Lines), "");
        assert_eq!(format_keys(&[], KeysFormat::Null), "");
        assert_eq!(format_keys(&[], KeysFormat::Json), "[]\n");
        assert!(matches!(
            escape_key("user:1"),
            std::borrow::Cow::Borrowed("user:1")
        ));
    }

    #[test]
    fn errors_print_on_one_line_without_a_cause_the_message_quotes() {
        let os = std::io::Error::from_raw_os_error(20);
        let quoting = anyhow::Error::new(os).context(format!(
            "cannot use /x/cache: {}",
            std::io::Error::from_raw_os_error(20)
        ));
        assert_eq!(
            error_line(&quoting),
            "cannot use /x/cache: Not a directory (os error 20)"
        );
        let chained = anyhow::anyhow!("root cause").context("outer");
        assert_eq!(error_line(&chained), "outer: root cause");
        let pretty = anyhow::anyhow!(
            "bad magic number - expected=[\n    0x0,\n    0x61,\n] actual=[\n    0x6a,\n] (at offset 0x0)"
        );
        assert_eq!(
            error_line(&pretty),
            "bad magic number - expected=[0x0, 0x61] actual=[0x6a] (at offset 0x0)"
        );
        let backtrace = anyhow::anyhow!("trapped\nwasm backtrace:\n    0: f\n    1: g");
        assert_eq!(error_line(&backtrace), "trapped wasm backtrace: 0: f 1: g");
    }

    #[test]
    fn bytes_print_with_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(524_288_000), "500.00 MiB (524288000 bytes)");
    }
}
