//! The on-disk format: every byte the engine writes is described here, and only here.
//!
//! A cache directory holds these files the engine owns; anything else is left alone.
//!
//! ```text
//! pcache.meta           the directory's identity and format version (below)
//! 0000000001.seg, ...   record log segments: a segment header, then records; append-only,
//!                       replayed in ascending id order
//! index.hint            the index snapshot, written at flush and close: where every live record
//!                       is, in LRU order
//! *.tmp                 pcache.meta.tmp / index.hint.tmp being written; removed at open
//! damaged/              files and log tails recovery could not use, moved aside, never read
//! ```
//!
//! All integers are little-endian. This is **format version 3**; the layout below is planned
//! for the next issues too (marked *planned*), so that the directory format changes once.
//!
//! ## Metadata (`pcache.meta`, 32 bytes)
//!
//! ```text
//!  0  8  magic "PCACHE\0\0"
//!  8  4  format version (3)
//! 12  8  cache id: random, chosen when the directory is created; every segment and the snapshot
//!        carry it, so a file from another cache is recognised as foreign
//! 20  4  first headed segment: segments with a lower id were written by version 1 or 2 and have
//!        no segment header (they are read as before and disappear with compaction)
//! 24  4  flags, 0 (planned: bit 0 = a settings record is stored, see record kind 7)
//! 28  4  crc32 of bytes 0..28
//! ```
//!
//! Every version ends the file with a crc32 of all the bytes before it (so an engine tells a
//! newer version from damage) and keeps the magic and version at bytes 0..12.
//!
//! Versions 1 and 2 wrote 16 bytes: magic, version, crc32 of both.
//!
//! ## Segment header (40 bytes at the start of every segment from version 3)
//!
//! ```text
//!  0  8  magic "PCSEG\0\0\0"
//!  8  4  format version (3)
//! 12  4  segment id: must equal the id in the file's name
//! 16  8  cache id: must equal the metadata's
//! 24  8  session: a random id of the open that created the segment (planned: with several
//!        processes on one directory, each writes its own segments and readers follow them)
//! 32  4  flags, 0
//! 36  4  crc32 of bytes 0..36
//! ```
//!
//! A segment whose header is missing, damaged or names another id or cache is *foreign*: a file
//! renamed, copied or restored from elsewhere. Recovery moves it into `damaged/` and never reads
//! a record from it, so it cannot become a source of old values. So is a segment larger than a
//! record offset can address (4 GiB).
//!
//! ## Record (segments hold nothing but records after the header, back to back)
//!
//! ```text
//! offset size field
//!  0     4    header_crc   crc32 of bytes 4..23 (the rest of the header, body_hash included)
//!  4     4    body_hash    low 32 bits of xxh3-64 of key ++ value (fast in wasm with simd128)
//!  8     1    kind         1 put, 2 delete (tombstone), 3 clear, 4 seal,
//!                          5 touch (new expires_at for the key's current value),
//!                          6 delete-prefix (every key starting with `key` is deleted),
//!                          7 settings, 8 session, 9 checkpoint (planned; read and skipped)
//!  9     2    key_len      1..=4096 for put/delete/touch/delete-prefix, 0 for the others
//! 11     4    value_len    0 unless put, settings, session or checkpoint
//! 15     8    expires_at   ms since the UNIX epoch; 0 = never (put and touch; 0 for the rest)
//! 23     key_len bytes of UTF-8 key, then value_len bytes of value
//! ```
//!
//! Planned kinds, already accepted (and skipped at replay) by this version so that adding them
//! needs no new format version: *settings* (value: the cache's stored options — size limit,
//! default TTL — the last one wins), *session* (value: a writer session's id and start; with
//! several processes on one directory, a reader seeing a new session reloads what it wrote), and
//! *checkpoint* (value: the snapshot generation written at this point of the log, so recovery
//! of a cache that is never closed replays only the log since its last periodic checkpoint).
//!
//! Version history: version 1 had kinds 1–4 only. Version 2 added touch and delete-prefix.
//! Version 3 added the segment header, the cache id and the planned kinds. An engine reads every
//! older version and upgrades at open (before writing anything else): it seals and syncs the
//! newest old segment, then writes the version 3 metadata naming the first headed segment, so an
//! older engine refuses the directory instead of mistaking the new files for damage.
//!
//! ## What is synced when (what a power cut can take)
//!
//! Writes append one whole record with one `write`; with `sync_writes` each is synced before it
//! is acknowledged (and every new segment's directory entry too). By default nothing is synced
//! per write; these points sync **the whole log** (every segment written since its last sync,
//! then the directory):
//!
//! - **Flush and close**, before the snapshot is written to a temporary file, synced, renamed
//!   over `index.hint`, and the directory synced. After a flush, a power cut can take only what
//!   is written later, wherever it is.
//! - **Compaction**, before it deletes the oldest segment, when that segment held a live record
//!   (its copy must be durable first) or a record a write not yet synced made dead (an
//!   overwrite or delete of its key: else a power cut could take the newer record and the
//!   older one both), and after every open (what an earlier process wrote may be unsynced).
//!   The deletion is synced before the next one, so segments disappear oldest first.
//! - **Clear**: the clear record (in a new segment) is synced with the directory before any
//!   older segment is deleted.
//! - **Creating** `pcache.meta` (once per directory).
//!
//! A roll syncs nothing: segments written since the last sync point may all be torn by a power
//! cut, but never anything the last flush covered.
//!
//! ## Recovery (open)
//!
//! - A record that fails to decode with **nothing that decodes after it** in its segment is a
//!   torn end (a crash or a power cut during writes not yet synced): the segment is cut there.
//!   If the tail holds a record that decodes at some later offset, or is too long to look
//!   through (more than 1 MiB), it is first copied into `damaged/` and synced, so recovery
//!   never destroys bytes it could read. In the newest segment, any failure ends the log.
//! - A failure **followed by records** in a segment other than the newest is damage: replay
//!   skips to the next record that decodes, so only the records in the damaged stretch are
//!   lost (counted in `stats`), and open then compacts the log up to that segment, so that the
//!   records older than the damage cannot resurface at a later replay.
//! - A **clear** record makes open delete every older segment.
//! - The **snapshot** is used only when it matches the log: every entry lies inside an existing
//!   segment (or in one older than the oldest segment, deleted by compaction since: that entry
//!   is dropped, and compaction's copy of it is found by replay; or in a segment set aside) and
//!   the log reaches the snapshot's covered position. Otherwise it is removed and the whole log
//!   replayed — the log alone always gives the values; the snapshot saves time, keeps the LRU
//!   order and remembers evictions. A damaged record met by a read is a miss and gets a
//!   tombstone, so a later replay cannot find an older record of the key.
//!
//! A touch record changes only the expiry of the entry its key holds when it is replayed (none:
//! it does nothing). Compaction copies a live put record with the entry's current expiry, so a
//! touch dropped with its segment is never needed again. Delete-prefix, like a tombstone, also
//! voids records of evicted keys that replay would otherwise find.
//!
//! Eviction writes no tombstone: an evicted entry's record stays in the log until compaction
//! (always of the oldest segment first) removes it, so a replay of the whole log may bring the
//! entry back with its latest value. A delete therefore writes a tombstone even when the key is
//! not in the index.
//!
//! ## Index snapshot (`index.hint`)
//!
//! The code calls this file the snapshot everywhere ([`SNAPSHOT_FILE`]); its name on disk and
//! its magic keep the older word "hint" so that existing caches still open.
//!
//! ```text
//! 0   8   magic "PCHINT\0\0"
//! 8   4   format version (3; versions 1 and 2 lack the cache id and layout fields)
//! 12  4   covered segment id    the log position the snapshot is complete up to:
//! 16  8   covered offset        records at or after it are replayed at open
//! 24  8   entry count
//! 32  8   cache id              (version 3)
//! 40  4   layout                (version 3) 0: the entry list; 1: the table. An engine that
//!                               does not know a layout replays the log instead
//! ```
//!
//! **Layout 1, the table** (written since issue 16): used in place after one read and one
//! checksum, with no per-entry work at open — lookups probe the table, the LRU order is the
//! entries' order, and only what changes after the open is kept apart, in memory.
//!
//! ```text
//! 44  4   segments              m: how many segment summaries follow
//! 48  4   table bits            the table has 2^bits buckets, more than the entry count n
//! 52  4   0
//! 56      m segment summaries, ascending id, 24 bytes each:
//!           id u32, lowest entry offset u32, live bytes u64 (sum of its entries' len),
//!           end u64 (highest offset + len): what recovery checks against the log, and the
//!           live bytes the index starts from, without visiting an entry
//! then    n entries, least recently used first, 32 bytes each:
//!           segment u32, offset u32, len u32, expires_at u64, key position u64 (in the key
//!           area), key_len u16, tag u16 (bits 48..64 of the key's hash)
//! then    2^bits buckets, u32 each: entry number + 1, 0 = empty. An entry lives in the first
//!         empty bucket at or after (hash of its key) mod 2^bits, wrapping (linear probing);
//!         the hash is xxh3-64 of the key's bytes
//! then    the key area: keys back to back, UTF-8 (checked when a key is read)
//! end 8   xxh3-64 of every byte before it
//! ```
//!
//! **Layout 0, the entry list** (version 3 until issue 16; versions 1 and 2 have only this,
//! after a 32-byte header without the cache id and layout): read, never written any more.
//!
//! ```text
//! 44      entries, least recently used first:
//!         segment u32, offset u32, len u32, expires_at u64, key_len u16, key
//! end 4   crc32 of every byte before it
//! ```

/// The format version this engine writes; directories with a newer one are refused.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format version this engine reads (and upgrades at open).
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// Name of the metadata file.
pub const META_FILE: &str = "pcache.meta";
/// Name of the index snapshot file (named "hint" on disk since format version 1).
pub const SNAPSHOT_FILE: &str = "index.hint";
/// Suffix of files being written before an atomic rename.
pub const TMP_SUFFIX: &str = ".tmp";
/// The subdirectory damaged files and log tails are moved into.
pub const DAMAGED_DIR: &str = "damaged";
/// Bytes in a record header.
pub const RECORD_HEADER_LEN: usize = 23;
/// Longest key, in UTF-8 bytes.
pub const MAX_KEY_LEN: usize = 4096;
/// Bytes in the metadata file (version 3).
pub const META_LEN: usize = 32;
/// Bytes in the metadata file of versions 1 and 2.
pub const META_LEN_V2: usize = 16;
/// Bytes in a segment header.
pub const SEGMENT_HEADER_LEN: usize = 40;

const META_MAGIC: &[u8; 8] = b"PCACHE\0\0";
const SEGMENT_MAGIC: &[u8; 8] = b"PCSEG\0\0\0";
const SNAPSHOT_MAGIC: &[u8; 8] = b"PCHINT\0\0";
const SNAPSHOT_HEADER_LEN_V2: usize = 32;
const SNAPSHOT_HEADER_LEN: usize = 44;
const SNAPSHOT_ENTRY_FIXED_LEN: usize = 22;

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A key now holds a value.
    Put = 1,
    /// A key was deleted (tombstone).
    Delete = 2,
    /// Every older record is void.
    Clear = 3,
    /// The segment ends here and is never written again.
    Seal = 4,
    /// A key's current value now expires at `expires_at` (0 = never).
    Touch = 5,
    /// Every key starting with the record's key was deleted.
    DeletePrefix = 6,
    /// Planned: the cache's stored options (skipped at replay by this version).
    Settings = 7,
    /// Planned: a writer session started (skipped at replay by this version).
    Session = 8,
    /// Planned: a periodic checkpoint was written (skipped at replay by this version).
    Checkpoint = 9,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Put),
            2 => Some(Self::Delete),
            3 => Some(Self::Clear),
            4 => Some(Self::Seal),
            5 => Some(Self::Touch),
            6 => Some(Self::DeletePrefix),
            7 => Some(Self::Settings),
            8 => Some(Self::Session),
            9 => Some(Self::Checkpoint),
            _ => None,
        }
    }
}

/// A decoded record borrowing from the buffer it was read from.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: RecordKind,
    pub key: &'a str,
    pub value: &'a [u8],
    pub expires_at: u64,
    /// Total bytes of the record (header + key + value).
    pub len: usize,
    /// The record's bytes as stored (`len` of them), checksums included.
    pub raw: &'a [u8],
}

/// Why bytes did not decode as a record.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header, or than the length the (valid) header announces.
    Truncated { needed: usize },
    /// The header fails its checksum or holds impossible fields.
    BadHeader,
    /// The header is valid but the key or value fails its checksum.
    BadBody { len: usize },
}

/// Bytes a record with this key and value occupies on disk.
pub fn record_len(key_len: usize, value_len: usize) -> u64 {
    (RECORD_HEADER_LEN + key_len) as u64 + value_len as u64
}

/// Appends the encoding of one record to `out`.
///
/// The caller guarantees `key.len() <= MAX_KEY_LEN` and `value.len() <= u32::MAX`.
pub fn encode_record(
    out: &mut Vec<u8>,
    kind: RecordKind,
    key: &str,
    value: &[u8],
    expires_at: u64,
) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.push(kind as u8);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&expires_at.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    let body_hash = body_hash(&out[start + RECORD_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&body_hash.to_le_bytes());
    let header_crc = crc32fast::hash(&out[start + 4..start + RECORD_HEADER_LEN]);
    out[start..start + 4].copy_from_slice(&header_crc.to_le_bytes());
}

/// The record body check: the low 32 bits of xxh3-64 of key ++ value.
pub fn body_hash(key_and_value: &[u8]) -> u32 {
    xxh3(key_and_value) as u32
}

/// xxh3-64: in wasm through xxhash-rust (simd128); natively through twox-hash, which picks
/// AVX2 at run time. Both compute the same hash (tested below).
fn xxh3(bytes: &[u8]) -> u64 {
    #[cfg(target_arch = "wasm32")]
    let hash = xxhash_rust::xxh3::xxh3_64(bytes);
    #[cfg(not(target_arch = "wasm32"))]
    let hash = twox_hash::XxHash3_64::oneshot(bytes);
    hash
}

/// A record's header, decoded and checked (its body not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: RecordKind,
    pub key_len: usize,
    pub value_len: usize,
    pub expires_at: u64,
    /// The body check: see [`body_matches`].
    pub body_hash: u32,
    /// Total bytes of the record (header + key + value).
    pub len: usize,
}

/// Decodes the record header at the start of `buf`, verifying its checksum and shape.
///
/// Edge cases: fewer than [`RECORD_HEADER_LEN`] bytes → `Truncated`; a header that fails its
/// checksum or has impossible fields → `BadHeader`.
pub fn decode_header(buf: &[u8]) -> Result<Header, DecodeError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(DecodeError::Truncated {
            needed: RECORD_HEADER_LEN,
        });
    }
    let header_crc = u32_at(buf, 0);
    if crc32fast::hash(&buf[4..RECORD_HEADER_LEN]) != header_crc {
        return Err(DecodeError::BadHeader);
    }
    let kind = RecordKind::from_byte(buf[8]).ok_or(DecodeError::BadHeader)?;
    let key_len = u16::from_le_bytes([buf[9], buf[10]]) as usize;
    let value_len = u32_at(buf, 11) as usize;
    let shape_ok = match kind {
        RecordKind::Put => (1..=MAX_KEY_LEN).contains(&key_len),
        RecordKind::Delete | RecordKind::Touch | RecordKind::DeletePrefix => {
            (1..=MAX_KEY_LEN).contains(&key_len) && value_len == 0
        }
        RecordKind::Clear | RecordKind::Seal => key_len == 0 && value_len == 0,
        RecordKind::Settings | RecordKind::Session | RecordKind::Checkpoint => key_len == 0,
    };
    if !shape_ok {
        return Err(DecodeError::BadHeader);
    }
    Ok(Header {
        kind,
        key_len,
        value_len,
        expires_at: u64_at(buf, 15),
        body_hash: u32_at(buf, 4),
        len: RECORD_HEADER_LEN + key_len + value_len,
    })
}

/// True if `key` and `value` are the body a header with `body_hash` announced: the low 32 bits
/// of xxh3-64 of key ++ value (hashed in two pieces, so the value need not follow the key in
/// memory; a host checking a value it read for the engine uses this too).
pub fn body_matches(key: &[u8], value: &[u8], body_hash: u32) -> bool {
    #[cfg(target_arch = "wasm32")]
    let hash = {
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        hasher.update(key);
        hasher.update(value);
        hasher.digest()
    };
    #[cfg(not(target_arch = "wasm32"))]
    let hash = {
        use std::hash::Hasher;
        let mut hasher = twox_hash::XxHash3_64::with_seed(0);
        hasher.write(key);
        hasher.write(value);
        hasher.finish()
    };
    hash as u32 == body_hash
}

/// Decodes the record at the start of `buf`, verifying both checksums.
///
/// Edge cases: too few bytes for the header or the announced body → `Truncated`; a header that
/// fails its checksum or has impossible fields → `BadHeader`; key or value bytes that fail the
/// body checksum, or a key that is not UTF-8 → `BadBody`.
pub fn decode_record(buf: &[u8]) -> Result<Record<'_>, DecodeError> {
    let header = decode_header(buf)?;
    let len = header.len;
    if buf.len() < len {
        return Err(DecodeError::Truncated { needed: len });
    }
    let key_bytes = &buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + header.key_len];
    let value = &buf[RECORD_HEADER_LEN + header.key_len..len];
    if body_hash(&buf[RECORD_HEADER_LEN..len]) != header.body_hash {
        return Err(DecodeError::BadBody { len });
    }
    let key = std::str::from_utf8(key_bytes).map_err(|_| DecodeError::BadBody { len })?;
    Ok(Record {
        kind: header.kind,
        key,
        value,
        expires_at: header.expires_at,
        len,
        raw: &buf[..len],
    })
}

/// Name of the segment file with this id.
pub fn segment_file_name(id: u32) -> String {
    format!("{id:010}.seg")
}

/// The id of a segment file name, or `None` if the name is not one.
pub fn parse_segment_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the metadata file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The directory's format version.
    pub version: u32,
    /// The cache id (0 for versions 1 and 2, which had none).
    pub cache_id: u64,
    /// Segments below this id have no segment header (`u32::MAX` for versions 1 and 2).
    pub first_headed_segment: u32,
}

/// The version 3 metadata file's bytes.
pub fn encode_meta(meta: &Meta) -> [u8; META_LEN] {
    let mut out = [0u8; META_LEN];
    out[..8].copy_from_slice(META_MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&meta.cache_id.to_le_bytes());
    out[20..24].copy_from_slice(&meta.first_headed_segment.to_le_bytes());
    let crc = crc32fast::hash(&out[..28]);
    out[28..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The 16-byte metadata file of an older `version` (tests use it to make older directories).
pub fn encode_meta_version(version: u32) -> [u8; META_LEN_V2] {
    let mut out = [0u8; META_LEN_V2];
    out[..8].copy_from_slice(META_MAGIC);
    out[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&out[..12]);
    out[12..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Why a metadata file was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum MetaError {
    /// Not a metadata file, or damaged.
    Corrupt(String),
    /// Written by a newer, incompatible engine.
    NewerVersion(u32),
}

/// Checks a metadata file's bytes and returns what it says.
///
/// Edge cases: wrong length, magic or checksum → `Corrupt`; a version above ours with a valid
/// checksum (the last 4 bytes, over all before them, in every version) → `NewerVersion`.
pub fn decode_meta(bytes: &[u8]) -> Result<Meta, MetaError> {
    if bytes.len() < 16 || &bytes[..8] != META_MAGIC {
        return Err(MetaError::Corrupt(format!(
            "{META_FILE} is not a PersistentCache metadata file ({} bytes)",
            bytes.len()
        )));
    }
    // Every version ends the file with a crc32 of all the bytes before it, so damage is told
    // apart from a newer version before the version is believed.
    let crc_at = bytes.len() - 4;
    if crc32fast::hash(&bytes[..crc_at]) != u32_at(bytes, crc_at) {
        return Err(MetaError::Corrupt(format!(
            "{META_FILE} fails its checksum"
        )));
    }
    let version = u32_at(bytes, 8);
    let expected_len = match version {
        v if v > FORMAT_VERSION => return Err(MetaError::NewerVersion(v)),
        v if v < OLDEST_READABLE_VERSION => {
            return Err(MetaError::Corrupt(format!(
                "{META_FILE} names format version {v}, which never existed"
            )))
        }
        1 | 2 => META_LEN_V2,
        _ => META_LEN,
    };
    if bytes.len() != expected_len {
        return Err(MetaError::Corrupt(format!(
            "{META_FILE} is {} bytes; version {version} has {expected_len}",
            bytes.len()
        )));
    }
    Ok(if expected_len == META_LEN_V2 {
        Meta {
            version,
            cache_id: 0,
            first_headed_segment: u32::MAX,
        }
    } else {
        Meta {
            version,
            cache_id: u64_at(bytes, 12),
            first_headed_segment: u32_at(bytes, 20),
        }
    })
}

/// The header that starts segment `id` of cache `cache_id`, created by open `session`.
pub fn encode_segment_header(id: u32, cache_id: u64, session: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out[..8].copy_from_slice(SEGMENT_MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&id.to_le_bytes());
    out[16..24].copy_from_slice(&cache_id.to_le_bytes());
    out[24..32].copy_from_slice(&session.to_le_bytes());
    let crc = crc32fast::hash(&out[..36]);
    out[36..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks that `bytes` are the header of segment `id` of cache `cache_id`.
///
/// Edge cases: too short, wrong magic or checksum, another id or another cache → `Err` with a
/// one-line reason (the segment is then foreign: moved aside, never read).
pub fn check_segment_header(bytes: &[u8], id: u32, cache_id: u64) -> Result<(), String> {
    if bytes.len() < SEGMENT_HEADER_LEN || &bytes[..8] != SEGMENT_MAGIC {
        return Err("it has no segment header".into());
    }
    if crc32fast::hash(&bytes[..36]) != u32_at(bytes, 36) {
        return Err("its segment header fails its checksum".into());
    }
    let (named, owner) = (u32_at(bytes, 12), u64_at(bytes, 16));
    if owner != cache_id {
        return Err(format!("it belongs to another cache (id {owner:016x})"));
    }
    if named != id {
        return Err(format!("its header says it is segment {named}"));
    }
    Ok(())
}

/// One entry of the index snapshot, borrowing its key from the snapshot bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry<'a> {
    pub key: &'a str,
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
    pub expires_at: u64,
}

/// A validated index snapshot; its entries are decoded as they are iterated, so loading a
/// million-entry snapshot never holds a second copy of the index.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot<'a> {
    /// Segment id up to which the snapshot is complete.
    pub covered_segment: u32,
    /// Offset in `covered_segment` up to which the snapshot is complete.
    pub covered_offset: u64,
    /// Number of entries.
    pub count: usize,
    /// The cache the snapshot belongs to (`None` from versions 1 and 2).
    pub cache_id: Option<u64>,
    /// Where the entries start.
    entries_at: usize,
    body: &'a [u8],
}

impl<'a> Snapshot<'a> {
    /// The entries, least recently used first.
    pub fn entries(&self) -> impl Iterator<Item = SnapshotEntry<'a>> + 'a {
        let body = self.body;
        let mut pos = self.entries_at;
        (0..self.count).map_while(move |_| {
            let (entry, next) = snapshot_entry_at(body, pos, KeyCheck::Validated)?;
            pos = next;
            Some(entry)
        })
    }
}

/// Whether `snapshot_entry_at` checks that the key is UTF-8.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyCheck {
    /// Check it (`decode_snapshot`'s walk over every entry).
    Utf8,
    /// `decode_snapshot` checked every key of this body already.
    Validated,
}

fn snapshot_entry_at(
    body: &[u8],
    pos: usize,
    check: KeyCheck,
) -> Option<(SnapshotEntry<'_>, usize)> {
    let fixed = body.get(pos..pos + SNAPSHOT_ENTRY_FIXED_LEN)?;
    let key_len = u16::from_le_bytes([fixed[20], fixed[21]]) as usize;
    let end = pos + SNAPSHOT_ENTRY_FIXED_LEN + key_len;
    let key_bytes = body.get(pos + SNAPSHOT_ENTRY_FIXED_LEN..end)?;
    let key = match check {
        KeyCheck::Utf8 => std::str::from_utf8(key_bytes).ok()?,
        // SAFETY: a `Snapshot` is only made by `decode_snapshot`, after it walked every entry
        // of its (immutable, borrowed) body with `KeyCheck::Utf8`, so these bytes are a key it
        // found valid. Checking again cost a tenth of a million-entry open.
        KeyCheck::Validated => unsafe { std::str::from_utf8_unchecked(key_bytes) },
    };
    Some((
        SnapshotEntry {
            key,
            segment: u32_at(fixed, 0),
            offset: u32_at(fixed, 4),
            len: u32_at(fixed, 8),
            expires_at: u64_at(fixed, 12),
        },
        end,
    ))
}

/// Encodes an index snapshot in layout 0 (the entry list) from entries given least recently
/// used first. The engine writes layout 1 ([`encode_snapshot_table`]); this stays so that tests
/// can write the snapshots earlier versions left behind.
pub fn encode_snapshot<'a>(
    covered_segment: u32,
    covered_offset: u64,
    cache_id: u64,
    count: usize,
    entries: impl Iterator<Item = (&'a str, u32, u32, u32, u64)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + count * 40 + 4);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&covered_segment.to_le_bytes());
    out.extend_from_slice(&covered_offset.to_le_bytes());
    out.extend_from_slice(&(count as u64).to_le_bytes());
    out.extend_from_slice(&cache_id.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // layout 0: the entry list
    for (key, segment, offset, len, expires_at) in entries {
        out.extend_from_slice(&segment.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&expires_at.to_le_bytes());
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Validates an index snapshot; `None` if it is damaged in any way, or of a layout this
/// engine does not know (the log is then replayed).
pub fn decode_snapshot(bytes: &[u8]) -> Option<Snapshot<'_>> {
    if bytes.len() < SNAPSHOT_HEADER_LEN_V2 + 4 || &bytes[..8] != SNAPSHOT_MAGIC {
        return None;
    }
    let body = &bytes[..bytes.len() - 4];
    if crc32fast::hash(body) != u32_at(bytes, bytes.len() - 4) {
        return None;
    }
    let (entries_at, cache_id) = match u32_at(body, 8) {
        // Versions 1 and 2 share the shorter header.
        1 | 2 => (SNAPSHOT_HEADER_LEN_V2, None),
        FORMAT_VERSION if body.len() >= SNAPSHOT_HEADER_LEN && u32_at(body, 40) == LAYOUT_LIST => {
            (SNAPSHOT_HEADER_LEN, Some(u64_at(body, 32)))
        }
        _ => return None,
    };
    let count = usize::try_from(u64_at(body, 24)).ok()?;
    // Walk every entry once so a structurally bad snapshot is refused before use.
    let mut pos = entries_at;
    for _ in 0..count {
        pos = snapshot_entry_at(body, pos, KeyCheck::Utf8)?.1;
    }
    (pos == body.len()).then_some(Snapshot {
        covered_segment: u32_at(body, 12),
        covered_offset: u64_at(body, 16),
        count,
        cache_id,
        entries_at,
        body,
    })
}

/// Layout 0 of the snapshot: the entry list.
const LAYOUT_LIST: u32 = 0;
/// Layout 1 of the snapshot: the table.
const LAYOUT_TABLE: u32 = 1;
const TABLE_HEADER_LEN: usize = 56;
const TABLE_SUMMARY_LEN: usize = 24;
const TABLE_ENTRY_LEN: usize = 32;
const TABLE_TRAILER_LEN: usize = 8;

/// The layout of the snapshot in `bytes` (0 for versions 1 and 2); `None` if they are not a
/// snapshot's. Reads only the header: nothing is checked yet.
pub fn snapshot_layout(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < SNAPSHOT_HEADER_LEN_V2 || &bytes[..8] != SNAPSHOT_MAGIC {
        return None;
    }
    match u32_at(bytes, 8) {
        1 | 2 => Some(LAYOUT_LIST),
        FORMAT_VERSION if bytes.len() >= SNAPSHOT_HEADER_LEN => Some(u32_at(bytes, 40)),
        _ => None,
    }
}

/// True if `bytes` hold a layout 1 snapshot (see [`SnapshotTable`]).
pub fn is_snapshot_table(bytes: &[u8]) -> bool {
    snapshot_layout(bytes) == Some(LAYOUT_TABLE)
}

/// What a layout 1 snapshot says about one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub id: u32,
    /// The lowest offset of an entry in it.
    pub start: u32,
    /// The sum of its entries' record lengths.
    pub live_bytes: u64,
    /// The highest end (offset + len) of an entry in it.
    pub end: u64,
}

/// A layout 1 snapshot, owned and used in place: its entries are read from its bytes when
/// asked for, and their locations and expiries can be changed there (in memory only).
pub struct SnapshotTable {
    bytes: Vec<u8>,
    /// Segment id up to which the snapshot is complete.
    pub covered_segment: u32,
    /// Offset in `covered_segment` up to which the snapshot is complete.
    pub covered_offset: u64,
    /// The cache it belongs to.
    pub cache_id: u64,
    segments: usize,
    count: usize,
    entries_at: usize,
    buckets_at: usize,
    bucket_mask: usize,
    keys_at: usize,
    keys_end: usize,
}

impl std::fmt::Debug for SnapshotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotTable")
            .field("count", &self.count)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl SnapshotTable {
    /// Checks a layout 1 snapshot: its header, its sizes and its checksum, in time linear in
    /// its bytes but with no per-entry work. Entries that point outside the file, or keys that
    /// are not UTF-8, are found when read (a snapshot with a valid checksum has none unless
    /// crafted): such an entry reads as absent.
    ///
    /// Edge cases: another layout, version or magic, a wrong checksum, sizes that do not add
    /// up, no more buckets than entries → `None` (the log is then replayed). A crafted table
    /// whose buckets are all taken is accepted: its probes stay bounded by the bucket count.
    pub fn decode(bytes: Vec<u8>) -> Option<Self> {
        if !is_snapshot_table(&bytes) || bytes.len() < TABLE_HEADER_LEN + TABLE_TRAILER_LEN {
            return None;
        }
        let body_len = bytes.len() - TABLE_TRAILER_LEN;
        if xxh3(&bytes[..body_len]) != u64_at(&bytes, body_len) {
            return None;
        }
        let segments = u32_at(&bytes, 44) as usize;
        let bits = u32_at(&bytes, 48);
        let count = usize::try_from(u64_at(&bytes, 24)).ok()?;
        if bits >= usize::BITS || bits > 31 || u32_at(&bytes, 52) != 0 {
            return None;
        }
        let buckets = 1usize << bits;
        if buckets <= count {
            return None;
        }
        let entries_at = TABLE_HEADER_LEN.checked_add(segments.checked_mul(TABLE_SUMMARY_LEN)?)?;
        let buckets_at = entries_at.checked_add(count.checked_mul(TABLE_ENTRY_LEN)?)?;
        let keys_at = buckets_at.checked_add(buckets.checked_mul(4)?)?;
        if keys_at > body_len {
            return None;
        }
        Some(SnapshotTable {
            covered_segment: u32_at(&bytes, 12),
            covered_offset: u64_at(&bytes, 16),
            cache_id: u64_at(&bytes, 32),
            segments,
            count,
            entries_at,
            buckets_at,
            bucket_mask: buckets - 1,
            keys_at,
            keys_end: body_len,
            bytes,
        })
    }

    /// Number of entries (numbered 0.., least recently used first).
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the file.
    pub fn file_len(&self) -> usize {
        self.bytes.len()
    }

    /// The segment summaries, ascending id.
    pub fn segments(&self) -> impl Iterator<Item = SegmentSummary> + '_ {
        (0..self.segments).map(|i| {
            let at = TABLE_HEADER_LEN + i * TABLE_SUMMARY_LEN;
            SegmentSummary {
                id: u32_at(&self.bytes, at),
                start: u32_at(&self.bytes, at + 4),
                live_bytes: u64_at(&self.bytes, at + 8),
                end: u64_at(&self.bytes, at + 16),
            }
        })
    }

    /// Entry `i`'s location and expiry. Edge case: `i` out of range panics (callers number
    /// entries below `len`).
    pub fn slot(&self, i: usize) -> crate::index::Slot {
        let at = self.entries_at + i * TABLE_ENTRY_LEN;
        crate::index::Slot {
            segment: u32_at(&self.bytes, at),
            offset: u32_at(&self.bytes, at + 4),
            len: u32_at(&self.bytes, at + 8),
            expires_at: u64_at(&self.bytes, at + 12),
        }
    }

    /// Entry `i`'s key; `None` if it lies outside the key area or is not UTF-8 (a crafted
    /// file: the entry is then treated as absent).
    pub fn key(&self, i: usize) -> Option<&str> {
        std::str::from_utf8(self.key_bytes(i)?).ok()
    }

    /// Entry `i`'s key bytes; `None` if they lie outside the key area (lookups compare bytes,
    /// without `key`'s UTF-8 check).
    fn key_bytes(&self, i: usize) -> Option<&[u8]> {
        let at = self.entries_at + i * TABLE_ENTRY_LEN;
        let start = usize::try_from(u64_at(&self.bytes, at + 20)).ok()?;
        let len = u16::from_le_bytes([self.bytes[at + 28], self.bytes[at + 29]]) as usize;
        let from = self.keys_at.checked_add(start)?;
        let to = from.checked_add(len)?;
        if to > self.keys_end {
            return None;
        }
        Some(&self.bytes[from..to])
    }

    /// The number of the entry holding `key`; `None` on a miss. Probes at most every bucket
    /// once, so a crafted table without an empty bucket still ends.
    pub fn find(&self, key: &str) -> Option<usize> {
        let hash = xxh3(key.as_bytes());
        let tag = (hash >> 48) as u16;
        let mut bucket = hash as usize & self.bucket_mask;
        for _ in 0..=self.bucket_mask {
            let at = self.buckets_at + bucket * 4;
            let entry = u32_at(&self.bytes, at) as usize;
            if entry == 0 {
                return None;
            }
            let i = entry - 1;
            if i < self.count {
                let entry_at = self.entries_at + i * TABLE_ENTRY_LEN;
                let entry_tag =
                    u16::from_le_bytes([self.bytes[entry_at + 30], self.bytes[entry_at + 31]]);
                if entry_tag == tag && self.key_bytes(i) == Some(key.as_bytes()) {
                    return Some(i);
                }
            }
            bucket = (bucket + 1) & self.bucket_mask;
        }
        None
    }

    /// Changes entry `i`'s location (after compaction moved its record), in memory.
    pub fn set_location(&mut self, i: usize, segment: u32, offset: u32) {
        let at = self.entries_at + i * TABLE_ENTRY_LEN;
        self.bytes[at..at + 4].copy_from_slice(&segment.to_le_bytes());
        self.bytes[at + 4..at + 8].copy_from_slice(&offset.to_le_bytes());
    }

    /// Changes entry `i`'s expiry, in memory.
    pub fn set_expires_at(&mut self, i: usize, expires_at: u64) {
        let at = self.entries_at + i * TABLE_ENTRY_LEN + 12;
        self.bytes[at..at + 8].copy_from_slice(&expires_at.to_le_bytes());
    }
}

/// Encodes an index snapshot in layout 1 (the table) from entries given least recently used
/// first, each key once. `entries` is called twice (sizes first, then the bytes), so the file
/// is built in place in one buffer of its exact size.
pub fn encode_snapshot_table<'a, I>(
    covered_segment: u32,
    covered_offset: u64,
    cache_id: u64,
    entries: impl Fn() -> I,
) -> Vec<u8>
where
    I: Iterator<Item = (&'a str, crate::index::Slot)>,
{
    let mut count = 0usize;
    let mut key_bytes = 0usize;
    let mut summaries: std::collections::BTreeMap<u32, SegmentSummary> = Default::default();
    for (key, slot) in entries() {
        count += 1;
        key_bytes += key.len();
        let end = u64::from(slot.offset) + u64::from(slot.len);
        let summary = summaries.entry(slot.segment).or_insert(SegmentSummary {
            id: slot.segment,
            start: slot.offset,
            live_bytes: 0,
            end,
        });
        summary.start = summary.start.min(slot.offset);
        summary.live_bytes += u64::from(slot.len);
        summary.end = summary.end.max(end);
    }
    // At most two thirds full, so a probe ends after a bucket or two on average.
    let bits = (count + count / 2 + 1).next_power_of_two().trailing_zeros();
    let mask = (1usize << bits) - 1;
    let entries_at = TABLE_HEADER_LEN + summaries.len() * TABLE_SUMMARY_LEN;
    let buckets_at = entries_at + count * TABLE_ENTRY_LEN;
    let keys_at = buckets_at + (mask + 1) * 4;
    let body_len = keys_at + key_bytes;
    let mut out = vec![0u8; body_len + TABLE_TRAILER_LEN];
    let put =
        |out: &mut [u8], at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut out, 0, SNAPSHOT_MAGIC);
    put(&mut out, 8, &FORMAT_VERSION.to_le_bytes());
    put(&mut out, 12, &covered_segment.to_le_bytes());
    put(&mut out, 16, &covered_offset.to_le_bytes());
    put(&mut out, 24, &(count as u64).to_le_bytes());
    put(&mut out, 32, &cache_id.to_le_bytes());
    put(&mut out, 40, &LAYOUT_TABLE.to_le_bytes());
    put(&mut out, 44, &(summaries.len() as u32).to_le_bytes());
    put(&mut out, 48, &bits.to_le_bytes());
    for (n, s) in summaries.values().enumerate() {
        let at = TABLE_HEADER_LEN + n * TABLE_SUMMARY_LEN;
        put(&mut out, at, &s.id.to_le_bytes());
        put(&mut out, at + 4, &s.start.to_le_bytes());
        put(&mut out, at + 8, &s.live_bytes.to_le_bytes());
        put(&mut out, at + 16, &s.end.to_le_bytes());
    }
    let mut key_pos = 0usize;
    // `take(count)`: the second pass must not write past what the first one measured.
    for (i, (key, slot)) in entries().take(count).enumerate() {
        let hash = xxh3(key.as_bytes());
        let at = entries_at + i * TABLE_ENTRY_LEN;
        put(&mut out, at, &slot.segment.to_le_bytes());
        put(&mut out, at + 4, &slot.offset.to_le_bytes());
        put(&mut out, at + 8, &slot.len.to_le_bytes());
        put(&mut out, at + 12, &slot.expires_at.to_le_bytes());
        put(&mut out, at + 20, &(key_pos as u64).to_le_bytes());
        put(&mut out, at + 28, &(key.len() as u16).to_le_bytes());
        put(&mut out, at + 30, &((hash >> 48) as u16).to_le_bytes());
        put(&mut out, keys_at + key_pos, key.as_bytes());
        key_pos += key.len();
        let mut bucket = hash as usize & mask;
        while u32_at(&out, buckets_at + bucket * 4) != 0 {
            bucket = (bucket + 1) & mask;
        }
        put(
            &mut out,
            buckets_at + bucket * 4,
            &(i as u32 + 1).to_le_bytes(),
        );
    }
    let hash = xxh3(&out[..body_len]);
    out[body_len..].copy_from_slice(&hash.to_le_bytes());
    out
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {

    /// The native hash (twox-hash) is the one the component computes (xxhash-rust), whole or
    /// in two pieces, across xxh3's size classes.
    #[test]
    fn native_and_component_hashes_agree() {
        for len in [
            0usize,
            1,
            3,
            16,
            17,
            128,
            129,
            240,
            241,
            1024,
            4096,
            100_000,
            1 << 20,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let reference = xxhash_rust::xxh3::xxh3_64(&bytes) as u32;
            assert_eq!(body_hash(&bytes), reference, "{len} bytes");
            let split = len / 3;
            assert!(body_matches(&bytes[..split], &bytes[split..], reference));
            assert!(!body_matches(
                &bytes[..split],
                &bytes[split..],
                reference ^ 1
            ));
        }
    }

    use super::*;

    fn encoded(kind: RecordKind, key: &str, value: &[u8], expires_at: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(&mut out, kind, key, value, expires_at);
        out
    }

    #[test]
    fn record_round_trips() {
        let bytes = encoded(RecordKind::Put, "user:1", b"{\"a\":1}", 42);
        assert_eq!(bytes.len() as u64, record_len(6, 7));
        let rec = decode_record(&bytes).unwrap();
        assert_eq!(rec.kind, RecordKind::Put);
        assert_eq!(rec.key, "user:1");
        assert_eq!(rec.value, b"{\"a\":1}");
        assert_eq!(rec.expires_at, 42);
        assert_eq!(rec.len, bytes.len());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encoded(RecordKind::Put, "k", b"value bytes", 7);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_record(&damaged).is_err(),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encoded(RecordKind::Put, "key", &[9u8; 100], 0);
        for len in 0..bytes.len() {
            assert!(matches!(
                decode_record(&bytes[..len]),
                Err(DecodeError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn impossible_shapes_are_bad_headers() {
        // A tombstone that claims a value cannot be produced by encode_record; craft one.
        let mut bytes = encoded(RecordKind::Delete, "k", b"", 0);
        bytes[11] = 5;
        let crc = crc32fast::hash(&bytes[4..RECORD_HEADER_LEN]);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_record(&bytes), Err(DecodeError::BadHeader));
        assert_eq!(decode_record(&[0u8; 64]), Err(DecodeError::BadHeader));
    }

    #[test]
    fn segment_names_round_trip_and_reject_others() {
        assert_eq!(segment_file_name(7), "0000000007.seg");
        assert_eq!(parse_segment_file_name("0000000007.seg"), Some(7));
        for other in [
            "7.seg",
            "000000000x.seg",
            "0000000007.seg.tmp",
            "index.hint",
        ] {
            assert_eq!(parse_segment_file_name(other), None);
        }
    }

    #[test]
    fn meta_checks_version_and_damage() {
        let ours = Meta {
            version: FORMAT_VERSION,
            cache_id: 0xfeed,
            first_headed_segment: 7,
        };
        let meta = encode_meta(&ours);
        assert_eq!(decode_meta(&meta), Ok(ours));
        let mut newer = encode_meta_version(FORMAT_VERSION + 1);
        assert_eq!(
            decode_meta(&newer),
            Err(MetaError::NewerVersion(FORMAT_VERSION + 1))
        );
        newer[0] ^= 1;
        assert!(matches!(decode_meta(&newer), Err(MetaError::Corrupt(_))));
        for old in [1, 2] {
            assert_eq!(
                decode_meta(&encode_meta_version(old)),
                Ok(Meta {
                    version: old,
                    cache_id: 0,
                    first_headed_segment: u32::MAX
                })
            );
        }
        assert!(matches!(
            decode_meta(&encode_meta_version(0)),
            Err(MetaError::Corrupt(_))
        ));
        for i in 0..meta.len() {
            let mut flipped = meta;
            flipped[i] ^= 1;
            assert!(decode_meta(&flipped).is_err(), "byte {i}");
        }
    }

    #[test]
    fn segment_headers_name_their_segment_and_cache() {
        let header = encode_segment_header(5, 0xabc, 1);
        assert_eq!(check_segment_header(&header, 5, 0xabc), Ok(()));
        assert!(check_segment_header(&header, 6, 0xabc)
            .unwrap_err()
            .contains("segment 5"));
        assert!(check_segment_header(&header, 5, 0xabd)
            .unwrap_err()
            .contains("another cache"));
        assert!(check_segment_header(&header[..39], 5, 0xabc).is_err());
        for i in 0..header.len() {
            let mut flipped = header;
            flipped[i] ^= 0x20;
            assert!(
                check_segment_header(&flipped, 5, 0xabc).is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let entries = [("a", 1u32, 0u32, 30u32, 0u64), ("bb", 2, 64, 31, 99)];
        let bytes = encode_snapshot(2, 95, 0x77, entries.len(), entries.iter().copied());
        let snapshot = decode_snapshot(&bytes).unwrap();
        assert_eq!(snapshot.cache_id, Some(0x77));
        assert_eq!(snapshot.covered_segment, 2);
        assert_eq!(snapshot.covered_offset, 95);
        let entries: Vec<SnapshotEntry<'_>> = snapshot.entries().collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].key, "bb");
        assert_eq!(entries[1].expires_at, 99);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert_eq!(decode_snapshot(&damaged), None, "byte {i}");
            assert_eq!(decode_snapshot(&bytes[..i]), None);
        }
    }
}
