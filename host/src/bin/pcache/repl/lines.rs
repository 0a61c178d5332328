//! Input lines read with a length bound: the rest of an over-long line is discarded as it streams by.

use std::io::{self, BufRead, Read};

/// Room on a REPL line beyond the value: the command, a key (at most 4096 bytes), flags, quotes.
pub const LINE_ROOM: u64 = 8 << 10;
/// The longest REPL line accepted whatever the size limit: 64 MiB.
pub const MAX_LINE: u64 = 64 << 20;

/// The longest line (in bytes, without its line ending) worth reading for a cache whose size
/// limit is `size_limit`: a value longer than the limit cannot be stored.
///
/// Edge cases: `size_limit + LINE_ROOM`, saturating, and never more than [`MAX_LINE`]; a line
/// whose value would fit once unquoted or encoded (heavy quoting, JSON whitespace) but whose
/// text is longer than this is still refused.
pub fn line_limit(size_limit: u64) -> u64 {
    size_limit.saturating_add(LINE_ROOM).min(MAX_LINE)
}

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line, without its "\n" or "\r\n".
    Text(String),
    /// The line had more bytes than the bound; they were read and dropped, not kept.
    TooLong,
    /// The line is not valid UTF-8.
    NotUtf8,
}

/// The lines of `reader`, none of which is held in memory beyond `max` bytes (plus two for the
/// line ending).
pub struct BoundedLines<R> {
    reader: R,
    max: u64,
}

impl<R: BufRead> BoundedLines<R> {
    /// Lines of `reader` of at most `max` bytes each, not counting the line ending.
    ///
    /// Edge cases: a last line without a line ending is still a line; an empty line is
    /// `Text("")`; `max` 0 accepts only empty lines.
    pub fn new(reader: R, max: u64) -> Self {
        BoundedLines { reader, max }
    }
}

impl<R: BufRead> Iterator for BoundedLines<R> {
    type Item = io::Result<Line>;

    fn next(&mut self) -> Option<io::Result<Line>> {
        let mut bytes = Vec::new();
        // Up to the bound plus a "\r\n": anything longer is over the bound whatever it ends with.
        let window = self.max.saturating_add(2);
        match (&mut self.reader)
            .take(window)
            .read_until(b'\n', &mut bytes)
        {
            Ok(0) => return None,
            Ok(_) => {}
            Err(err) => return Some(Err(err)),
        }
        let ended = bytes.last() == Some(&b'\n');
        if !ended && bytes.len() as u64 == window {
            // Still inside the line: stream the rest of it past, up to and including its "\n".
            return Some(self.reader.skip_until(b'\n').map(|_| Line::TooLong));
        }
        if ended {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.len() as u64 > self.max {
            return Some(Ok(Line::TooLong));
        }
        Some(Ok(
            String::from_utf8(bytes).map_or(Line::NotUtf8, Line::Text)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: u64) -> Vec<Line> {
        BoundedLines::new(input, max)
            .collect::<io::Result<_>>()
            .unwrap()
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_owned())
    }

    #[test]
    fn lines_at_the_bound_pass_and_longer_ones_are_skipped_whole() {
        let input = b"12345\n123456\nab\r\n1234\r\n12345\r\n123456\r\nlast";
        assert_eq!(
            lines(input, 5),
            [
                text("12345"),
                Line::TooLong,
                text("ab"),
                text("1234"),
                text("12345"),
                Line::TooLong,
                text("last"),
            ]
        );
    }

    #[test]
    fn a_long_line_is_skipped_through_its_end_across_buffer_refills() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\nnext\n\n");
        input.extend(vec![b'y'; 30]);
        let reader = io::BufReader::with_capacity(16, &input[..]);
        let got: Vec<Line> = BoundedLines::new(reader, 10)
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(got, [Line::TooLong, text("next"), text(""), Line::TooLong]);
    }

    #[test]
    fn empty_input_invalid_utf8_and_a_zero_bound() {
        assert_eq!(lines(b"", 5), []);
        assert_eq!(lines(b"\xff\xfe\nok\n", 5), [Line::NotUtf8, text("ok")]);
        assert_eq!(lines(b"\n\r\nx\n", 0), [text(""), text(""), Line::TooLong]);
    }

    #[test]
    fn the_line_limit_follows_the_size_limit_up_to_the_cap() {
        assert_eq!(line_limit(1 << 20), (1 << 20) + LINE_ROOM);
        assert_eq!(line_limit(0), LINE_ROOM);
        assert_eq!(line_limit(500 << 20), MAX_LINE);
        assert_eq!(line_limit(u64::MAX), MAX_LINE);
    }
}
