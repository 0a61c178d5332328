//! The fault-injection test hook, compiled only with the `fault-injection` feature (test builds).

use super::{wit, CacheResource};

/// Keys starting with this are fault commands instead of keys (see [`inject`]).
pub(super) const PREFIX: &str = "\u{0}pcache-fault:";

/// Runs the fault command `command` (a `set` key after [`PREFIX`]) with the `set`'s `value`.
///
/// `trap` traps at once; `panic` panics (Rust's handler writes the message to stderr, then
/// traps); `trap-after-set:KEY` stores `value` under KEY, then traps before
/// returning; `spin` loops forever (for the host's time limit); `grow-memory` allocates until the
/// host's memory limit stops it; `open-outside` tries to create the file named by `value` (UTF-8,
/// lossily decoded) through every preopened directory and returns `io` listing the refusals, or
/// `Ok` if any open succeeded (a sandbox escape); `stage-hostile` asks the host's
/// `value-reader.stage` for what it must refuse (a directory, 4 GiB of a small file, bytes
/// past its end, bytes whose hash is wrong) and returns `Ok` only if each was declined or a
/// mismatch. Unknown commands are `invalid-key`. Every error
/// message starts with "pcache-fault", which tells this build apart from the released one.
pub(super) fn inject(cache: &CacheResource, command: &str, value: &[u8]) -> Result<(), wit::Error> {
    use wasip2::filesystem::preopens::get_directories;
    use wasip2::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    match command {
        "trap" => core::arch::wasm32::unreachable(),
        "panic" => panic!("pcache-fault: injected panic"),
        "spin" => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "grow-memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
        }
        "open-outside" => {
            let path = String::from_utf8_lossy(value).into_owned();
            let mut refusals = Vec::new();
            for (dir, name) in get_directories() {
                match dir.open_at(
                    PathFlags::SYMLINK_FOLLOW,
                    &path,
                    OpenFlags::CREATE,
                    DescriptorFlags::READ | DescriptorFlags::WRITE,
                ) {
                    Ok(_) => return Ok(()),
                    Err(code) => refusals.push(format!("{name}: {}", code.name())),
                }
            }
            Err(wit::Error::Io(wit::IoError {
                kind: wit::IoKind::PermissionDenied,
                message: format!(
                    "pcache-fault open-outside: opening {path:?} was refused by every preopen [{}]",
                    refusals.join(", ")
                ),
            }))
        }
        "stage-hostile" => {
            use super::value_reader::{stage, Staged};
            let (dir, _) = get_directories().into_iter().next().expect("a preopen");
            let file = dir
                .open_at(
                    PathFlags::empty(),
                    "stage-probe",
                    OpenFlags::CREATE,
                    DescriptorFlags::READ | DescriptorFlags::WRITE,
                )
                .map_err(|code| wit::Error::InvalidKey(format!("pcache-fault: {code:?}")))?;
            let _ = file.write(b"0123456789", 0);
            let hash = xxhash_rust::xxh3::xxh3_64(b"k0123456789") as u32;
            let checks = [
                (
                    "a directory",
                    stage(&dir, 0, 10, "k", hash),
                    Staged::Declined,
                ),
                (
                    "4 GiB",
                    stage(&file, 0, u32::MAX, "k", hash),
                    Staged::Declined,
                ),
                (
                    "past the end",
                    stage(&file, 5, 10, "k", hash),
                    Staged::Declined,
                ),
                (
                    "a wrong hash",
                    stage(&file, 0, 10, "k", hash ^ 1),
                    Staged::Mismatch,
                ),
                (
                    "the right hash",
                    stage(&file, 0, 10, "k", hash),
                    Staged::Staged,
                ),
            ];
            let _ = dir.unlink_file_at("stage-probe");
            let wrong: Vec<String> = checks
                .iter()
                .filter(|(_, got, want)| got != want)
                .map(|(what, got, _)| format!("{what}: {got:?}"))
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wit::Error::Corrupt(format!(
                    "pcache-fault stage-hostile: {}",
                    wrong.join(", ")
                )))
            }
        }
        other => match other.strip_prefix("trap-after-set:") {
            Some(key) => {
                cache.with_engine(|e| e.set(key, value, None))?;
                core::arch::wasm32::unreachable()
            }
            None => Err(wit::Error::InvalidKey(format!(
                "pcache-fault: unknown command {other:?}"
            ))),
        },
    }
}
