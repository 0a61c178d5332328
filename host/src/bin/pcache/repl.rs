//! The interactive shell: rustyline editing, history and completion; plain lines when piped.

mod lines;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use persistent_cache::PersistentCache;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Context, Editor, Helper, Highlighter, Hinter, Validator};

use crate::command::{error_line, format_keys, one_line, KeysFormat, Op, Outcome};
use lines::{line_limit, BoundedLines, Line};

/// The REPL's own words, besides the operations.
const REPL_WORDS: [&str; 3] = ["help", "quit", "exit"];

/// The words the REPL understands as the first token: the operations' names, from the same
/// definitions as the subcommands, then [`REPL_WORDS`].
fn commands() -> Vec<String> {
    let ops = Op::augment_subcommands(clap::Command::new("repl"));
    ops.get_subcommands()
        .map(|op| op.get_name().to_owned())
        .chain(REPL_WORDS.map(String::from))
        .collect()
}

const HELP: &str = "\
commands:
  get KEY [--raw]                  print the value as JSON (--raw: as stored), or (nil)
  set KEY VALUE [--ttl TTL]        store VALUE (JSON if it parses, else a string)
  delete KEY                       remove KEY: deleted / not found
  clear                            remove every entry
  stats                            counters as JSON
  keys [PREFIX] [--json | -0]      keys starting with PREFIX, sorted: one per line, with
                                   \\\\ \\n \\r \\t \\0 \\u{HEX} for backslashes and control
                                   characters; --json: one JSON array; -0: each key as it
                                   is, ended by a NUL byte, then a newline; none: nothing
                                   on stdout, \"(no keys)\" on stderr
  add KEY VALUE [--ttl TTL]        store only if KEY is absent: added / exists
  touch KEY [--ttl TTL]            refresh KEY and give it a new expiry from now
  pop KEY                          print the value and remove it, or (nil)
  incr KEY [DELTA] [--default N] [--ttl TTL]
                                   add DELTA (1) to an integer, print it
  delete-prefix PREFIX             remove keys starting with PREFIX, print count
  expire                           remove expired entries now, print count
  flush                            sync every write to disk and write the index snapshot
  help                             this text
  quit, exit, Ctrl-D               leave
TTL: seconds or a duration (300, 5m, 1h 30m), never, or default (the default TTL, what
no --ttl means); 0 is refused.
Quote like a shell: set user:1 '{\"name\": \"John Smith\"}' --ttl 5m
A line longer than the size limit plus 8 KiB (at most 64 MiB) is skipped.";

/// A REPL line: one operation, parsed by the same definitions as the subcommands.
#[derive(Parser, Debug)]
#[command(no_binary_name = true, disable_help_subcommand = true)]
struct ReplLine {
    /// Print `keys` as a JSON array (`stats` always prints as JSON).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    op: Op,
}

/// What one input line asks for.
enum Step {
    /// Print this and a newline on stdout.
    Print(String),
    /// Print this and a newline on stderr: a remark that is not the command's output.
    Note(String),
    /// Print nothing (a blank line of input).
    Nothing,
    Quit,
}

/// Runs the REPL on `cache` until quit or end of input.
pub async fn run(cache: &PersistentCache) -> anyhow::Result<()> {
    if std::io::stdin().is_terminal() {
        interactive(cache).await
    } else {
        piped(cache).await
    }
}

/// Commands from a pipe or file: no prompt, no banner, one output line per command (`keys`: a
/// line per key, none when there are none).
///
/// A line longer than [`line_limit`] is not kept in memory: it is read past and reported as
/// skipped, as is a line that is not UTF-8; the lines after it run.
async fn piped(cache: &PersistentCache) -> anyhow::Result<()> {
    let max = line_limit(cache.size_limit());
    let input = BoundedLines::new(std::io::stdin().lock(), max);
    for (number, line) in (1u64..).zip(input) {
        let step = match line? {
            Line::Text(text) => step(cache, &text).await,
            Line::TooLong => Step::Print(format!(
                "error: line {number}: longer than {max} bytes; skipped"
            )),
            Line::NotUtf8 => Step::Print(format!("error: line {number}: not UTF-8; skipped")),
        };
        match step {
            Step::Print(text) => crate::emit(text)?,
            Step::Note(text) => eprintln!("{text}"),
            Step::Nothing => {}
            Step::Quit => break,
        }
    }
    Ok(())
}

async fn interactive(cache: &PersistentCache) -> anyhow::Result<()> {
    let mut editor: Editor<CommandCompleter, DefaultHistory> = Editor::new()?;
    editor.set_helper(Some(CommandCompleter {
        commands: commands(),
    }));
    let history = dirs::data_dir().map(|d| d.join("persistent-cache").join("history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path); // none yet on the first run
    }
    println!(
        "pcache {} on {} — type help, quit with Ctrl-D",
        env!("CARGO_PKG_VERSION"),
        cache.directory().display()
    );
    // rustyline has no bound on a line being typed or pasted: one too long is refused once read,
    // before it is parsed or kept in the history.
    let max = line_limit(cache.size_limit());
    loop {
        match editor.readline("pcache> ") {
            Ok(line) if line.len() as u64 > max => {
                println!("error: longer than {max} bytes; skipped");
            }
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                match step(cache, &line).await {
                    Step::Print(text) => println!("{text}"),
                    Step::Note(text) => eprintln!("{text}"),
                    Step::Nothing => {}
                    Step::Quit => break,
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(err) => return Err(err.into()),
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(err) = editor.save_history(path) {
            eprintln!("pcache: cannot save history to {}: {err}", path.display());
        }
    }
    Ok(())
}

/// Runs one input line and says what to print.
async fn step(cache: &PersistentCache, line: &str) -> Step {
    let words = match shell_words::split(line) {
        Ok(words) => words,
        Err(err) => return Step::Print(format!("error: {err}")),
    };
    match words.first().map(String::as_str) {
        None => Step::Nothing,
        Some("quit" | "exit") => Step::Quit,
        Some("help" | "?") => Step::Print(HELP.to_owned()),
        // Files of a removed directory stay writable through their open handles, so writes
        // would print OK and vanish when the REPL ends: refuse them instead (one stat per line).
        Some(_)
            if !cache
                .directory()
                .join(persistent_cache::DATA_DIRECTORY)
                .is_dir() =>
        {
            Step::Print(format!(
                "error: the cache directory {} was removed or moved; quit and open it again",
                cache.directory().display()
            ))
        }
        Some(_) => match ReplLine::try_parse_from(&words) {
            Err(err) => Step::Print(format!("error: {}", one_line(&err.to_string()))),
            Ok(ReplLine { op, json }) => match op.execute(cache).await {
                Ok(outcome) => render(outcome, json),
                Err(err) => Step::Print(format!("error: {}", error_line(&err))),
            },
        },
    }
}

/// What the REPL prints for an outcome: one line, except for `keys`.
fn render(outcome: Outcome, json: bool) -> Step {
    let text = match outcome {
        Outcome::Keys { keys, null } => {
            let format = KeysFormat::new(json, null);
            let mut text = format_keys(&keys, format);
            if format == KeysFormat::Lines && text.is_empty() {
                return Step::Note("(no keys)".to_owned());
            }
            if text.ends_with('\n') {
                text.pop();
            }
            return Step::Print(text);
        }
        Outcome::Value(Some(value)) => value.to_string(),
        Outcome::Value(None) | Outcome::Raw(None) => "(nil)".to_owned(),
        Outcome::Raw(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Outcome::Done => "OK".to_owned(),
        Outcome::Deleted(true) => "deleted".to_owned(),
        Outcome::Deleted(false) => "not found".to_owned(),
        Outcome::Stats(stats) => {
            serde_json::to_string(&stats).unwrap_or_else(|e| format!("error: {e}"))
        }
        Outcome::Added(true) => "added".to_owned(),
        Outcome::Added(false) => "exists".to_owned(),
        Outcome::Touched(true) => "OK".to_owned(),
        Outcome::Touched(false) => "not found".to_owned(),
        Outcome::Number(n) => n.to_string(),
    };
    Step::Print(text)
}

/// Completes command names in the first word.
#[derive(Helper, Hinter, Highlighter, Validator)]
struct CommandCompleter {
    commands: Vec<String>,
}

impl Completer for CommandCompleter {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if before.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        let candidates = self
            .commands
            .iter()
            .filter(|c| c.starts_with(before))
            .map(|c| Pair {
                display: c.clone(),
                replacement: format!("{c} "),
            })
            .collect();
        Ok((0, candidates))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commands_are_every_operation_and_help_names_each() {
        let commands = commands();
        for expected in [
            "get",
            "keys",
            "delete-prefix",
            "expire",
            "flush",
            "help",
            "quit",
            "exit",
        ] {
            assert!(commands.iter().any(|c| c == expected), "{expected}");
        }
        for command in &commands {
            let mut words = HELP.split(|c: char| !(c.is_alphanumeric() || c == '-'));
            assert!(words.any(|w| w == command), "help does not name {command}");
        }
    }
}
