//! `wordfreq`: an example PersistentCache plugin — a word-frequency counter whose counts
//! persist from one run to the next.
//!
//! ```text
//! wordfreq add [TEXT...]   count the words of TEXT (or of stdin when no TEXT is given)
//! wordfreq top [N]         the N most frequent words (default 10) and the total
//! wordfreq count WORD...   how often each WORD was seen
//! wordfreq reset           forget everything
//! ```
//!
//! The plugin is an ordinary `wasi:cli` command (a `[[bin]]` built for `wasm32-wasip2`). Its
//! only storage is the `wasi:keyvalue` bucket `wordfreq`, which the host keeps in the cache
//! directory under a namespace private to this plugin; it has no filesystem or network.
//!
//! Layout of the bucket; every value is a counter kept by `atomics::increment`, which the
//! host stores as decimal text:
//! - `word:<w>`: how often the word `<w>` was seen,
//! - `total`: how many words were added in all,
//! - `runs`: how many times `wordfreq add` ran.
//!
//! A word is a maximal run of letters and digits (any script), plus apostrophes inside it,
//! lowercased; see [`words`].

wit_bindgen::generate!({ path: "../../wit", world: "pcache:cache/plugin", generate_all });
use wasi::keyvalue::{atomics, batch, store};

mod words;

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt;
use std::io::BufRead;

const BUCKET: &str = "wordfreq";
const WORD_PREFIX: &str = "word:";
const TOTAL: &str = "total";
const RUNS: &str = "runs";
/// The longest key the host accepts, in bytes.
const MAX_KEY_BYTES: usize = 4000;
/// How many keys one `batch` call carries.
const BATCH: usize = 100;

const USAGE: &str = "\
usage: wordfreq add [TEXT...]   count the words of TEXT (or of stdin)
       wordfreq top [N]         show the N most frequent words (default 10)
       wordfreq count WORD...   show how often each WORD was seen
       wordfreq reset           forget all counts";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => {}
        Err(Error::Usage(msg)) => {
            eprintln!("wordfreq: {msg}\n{USAGE}");
            std::process::exit(1);
        }
        Err(err) => {
            eprintln!("wordfreq: {err}");
            std::process::exit(1);
        }
    }
}

/// A parsed command line.
enum Command<'a> {
    Add(&'a [String]),
    Top(usize),
    Count(&'a [String]),
    Reset,
    Help,
}

fn parse(args: &[String]) -> Result<Command<'_>, Error> {
    let Some((command, rest)) = args.split_first() else {
        return Err(Error::Usage("missing command".into()));
    };
    match (command.as_str(), rest) {
        ("add", text) => Ok(Command::Add(text)),
        ("top", []) => Ok(Command::Top(10)),
        ("top", [n]) => n
            .parse()
            .map(Command::Top)
            .map_err(|_| Error::Usage(format!("not a count: {n:?}"))),
        ("count", []) => Err(Error::Usage("count needs at least one WORD".into())),
        ("count", words) => Ok(Command::Count(words)),
        ("reset", []) => Ok(Command::Reset),
        ("help" | "-h" | "--help", []) => Ok(Command::Help),
        ("top" | "reset" | "help" | "-h" | "--help", _) => {
            Err(Error::Usage(format!("too many arguments for {command}")))
        }
        _ => Err(Error::Usage(format!("unknown command {command:?}"))),
    }
}

fn run(args: &[String]) -> Result<(), Error> {
    let open = || store::open(BUCKET);
    match parse(args)? {
        Command::Add(text) => add(&open()?, text),
        Command::Top(n) => top(&open()?, n),
        Command::Count(words) => count(&open()?, words),
        Command::Reset => reset(&open()?),
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
    }
}

/// `wordfreq add`: counts the words of `text` (of stdin when empty) into the bucket.
fn add(bucket: &store::Bucket, text: &[String]) -> Result<(), Error> {
    let mut counts = BTreeMap::new();
    let mut added = if text.is_empty() {
        count_stdin(&mut counts)?
    } else {
        words::count_words(&text.join(" "), &mut counts)
    };
    // A word too long for a key cannot be stored: leave it out, and say so.
    counts.retain(|word, count| {
        let fits = fits_in_key(word);
        if !fits {
            eprintln!(
                "wordfreq: skipped a word of {} bytes (too long)",
                word.len()
            );
            added -= *count;
        }
        fits
    });

    for (word, count) in &counts {
        atomics::increment(bucket, &word_key(word), *count)?;
    }
    let total = atomics::increment(bucket, TOTAL, added)?;
    let runs = atomics::increment(bucket, RUNS, 1)?;
    let plural = |n: i64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    println!(
        "added {added} {} ({} distinct); {total} {} in total over {runs} {}",
        plural(added, "word", "words"),
        counts.len(),
        plural(total, "word", "words"),
        plural(runs, "run", "runs"),
    );
    Ok(())
}

/// Counts the words of stdin, line by line (a word never spans lines).
fn count_stdin(counts: &mut BTreeMap<String, i64>) -> Result<i64, Error> {
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    let mut added = 0;
    loop {
        line.clear();
        if stdin.read_until(b'\n', &mut line).map_err(Error::Stdin)? == 0 {
            return Ok(added);
        }
        added += words::count_words(&String::from_utf8_lossy(&line), counts);
    }
}

/// A word and its count, ordered so that the greater one ranks first: the higher count,
/// then the word that sorts first.
#[derive(PartialEq, Eq)]
struct Ranked {
    count: i64,
    word: String,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.count
            .cmp(&other.count)
            .then_with(|| other.word.cmp(&self.word))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `wordfreq top`: prints the `n` most frequent words, then the total.
fn top(bucket: &store::Bucket, n: usize) -> Result<(), Error> {
    // Keep only the best `n` so far: a min-heap whose root is the weakest of them.
    let mut best = BinaryHeap::with_capacity(n.saturating_add(1).min(1024));
    for_each_page(bucket, |keys| {
        let word_keys: Vec<String> = keys
            .into_iter()
            .filter(|key| key.starts_with(WORD_PREFIX))
            .collect();
        for (key, count) in fetch_counts(bucket, &word_keys)? {
            let word = key[WORD_PREFIX.len()..].to_owned();
            best.push(Reverse(Ranked { count, word }));
            if best.len() > n {
                best.pop();
            }
        }
        Ok(())
    })?;

    // Sorted ascending by `Reverse`, that is best first.
    let ranked = best.into_sorted_vec();
    let width = ranked
        .iter()
        .map(|Reverse(r)| r.count.to_string().len())
        .max()
        .unwrap_or(0);
    for Reverse(Ranked { count, word }) in &ranked {
        println!("{count:>width$} {word}");
    }
    println!("total {}", read_counter(bucket, TOTAL)?);
    Ok(())
}

/// `wordfreq count`: prints how often each of `wanted` was seen.
fn count(bucket: &store::Bucket, wanted: &[String]) -> Result<(), Error> {
    let keys: Vec<String> = wanted
        .iter()
        .map(|word| words::normalize(word))
        .filter(|word| fits_in_key(word))
        .map(|word| word_key(&word))
        .collect();
    let counts = fetch_counts(bucket, &keys)?;
    for word in wanted {
        let key = word_key(&words::normalize(word));
        let count = counts.get(&key).copied().unwrap_or(0);
        println!("{word} {count}");
    }
    Ok(())
}

/// `wordfreq reset`: deletes every key of the bucket.
fn reset(bucket: &store::Bucket) -> Result<(), Error> {
    let mut removed = 0;
    // The cursor is the last key of the page, so deleting a page does not disturb paging.
    for_each_page(bucket, |keys| {
        for chunk in keys.chunks(BATCH) {
            batch::delete_many(bucket, chunk)?;
        }
        removed += keys.len();
        Ok(())
    })?;
    println!("reset: {removed} keys removed");
    Ok(())
}

/// Calls `f` with each page of the bucket's keys, in order.
fn for_each_page(
    bucket: &store::Bucket,
    mut f: impl FnMut(Vec<String>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut cursor: Option<String> = None;
    loop {
        let page = bucket.list_keys(cursor.as_deref())?;
        f(page.keys)?;
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

/// The counters stored under `keys`, fetched `BATCH` at a time; missing keys are left out.
fn fetch_counts(bucket: &store::Bucket, keys: &[String]) -> Result<HashMap<String, i64>, Error> {
    let mut counts = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(BATCH) {
        for (key, value) in batch::get_many(bucket, chunk)?.into_iter().flatten() {
            let count = parse_counter(&key, &value)?;
            counts.insert(key, count);
        }
    }
    Ok(counts)
}

/// The counter stored under `key`, 0 when there is none.
fn read_counter(bucket: &store::Bucket, key: &str) -> Result<i64, Error> {
    match bucket.get(key)? {
        Some(value) => parse_counter(key, &value),
        None => Ok(0),
    }
}

/// Reads a counter as `atomics::increment` stores it: an i64 as decimal text.
fn parse_counter(key: &str, value: &[u8]) -> Result<i64, Error> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Error::NotACounter {
            key: key.to_owned(),
            value: value.to_vec(),
        })
}

fn word_key(word: &str) -> String {
    format!("{WORD_PREFIX}{word}")
}

/// Whether `word_key(word)` is short enough to be a key.
fn fits_in_key(word: &str) -> bool {
    WORD_PREFIX.len() + word.len() <= MAX_KEY_BYTES
}

/// Why a command failed.
enum Error {
    /// The command line is wrong.
    Usage(String),
    /// The store refused an operation.
    Store(store::Error),
    /// Reading stdin failed.
    Stdin(std::io::Error),
    /// A key holds something other than a counter.
    NotACounter { key: String, value: Vec<u8> },
}

impl From<store::Error> for Error {
    fn from(err: store::Error) -> Self {
        Error::Store(err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => f.write_str(msg),
            Error::Store(store::Error::NoSuchStore) => write!(f, "no such bucket {BUCKET:?}"),
            Error::Store(store::Error::AccessDenied) => {
                write!(f, "access to bucket {BUCKET:?} denied")
            }
            Error::Store(store::Error::Other(msg)) => write!(f, "store error: {msg}"),
            Error::Stdin(err) => write!(f, "cannot read stdin: {err}"),
            Error::NotACounter { key, value } => write!(
                f,
                "key {key:?} does not hold a counter: {:?}",
                String::from_utf8_lossy(value)
            ),
        }
    }
}
