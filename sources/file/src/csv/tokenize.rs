//! CSV records from a byte stream, with what the Arrow readers do not keep: whether each field
//! was quoted, the physical line each record starts on, and where a quote that never closed
//! was opened.
//!
//! Quoting follows RFC 4180 as PostgreSQL's `COPY … CSV` and DuckDB read it: a field that
//! starts with the quote character runs to the matching quote (a doubled quote is one quote
//! character; with `escape`, the escape character makes the next character literal) and may
//! span lines; text after the closing quote is kept (`"a"b` is `ab`). A quote inside an
//! unquoted field is an ordinary character. Lines end with `\n`, `\r\n` or `\r`; empty lines
//! and comment lines are skipped; a UTF-8 byte order mark at the start is dropped.
//!
//! The bytes of every field (unescaped) go into one buffer per batch; a record longer than
//! `max_record_bytes` is an error, so a missing newline or an unclosed quote cannot grow it
//! without bound.

use std::io::BufRead;

/// The characters that shape records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Syntax {
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
    pub comment: Option<u8>,
    pub max_record_bytes: usize,
}

/// Why tokenizing stopped.
#[derive(Debug)]
pub(crate) enum TokenError {
    /// Reading the stream failed.
    Io(std::io::Error),
    /// The data is not CSV as configured, at `line`.
    At { line: u64, message: String },
}

/// One batch of records: every field's bytes in `data`, fields in record order.
#[derive(Debug, Default)]
pub(crate) struct Records {
    /// The fields' bytes, unescaped, back to back.
    pub data: Vec<u8>,
    /// Where each field ends in `data`.
    pub ends: Vec<usize>,
    /// Whether each field was quoted.
    pub quoted: Vec<bool>,
    /// Each record's first field (index into `ends`) and the line it starts on.
    pub rows: Vec<(usize, u64)>,
}

impl Records {
    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.quoted.clear();
        self.rows.clear();
    }

    /// Records in the batch.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Field `column` of record `row`: its bytes and whether it was quoted.
    pub(crate) fn field(&self, row: usize, column: usize) -> (&[u8], bool) {
        let i = self.rows[row].0 + column;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (&self.data[start..self.ends[i]], self.quoted[i])
    }

    /// Fields of record `row`.
    pub(crate) fn width(&self, row: usize) -> usize {
        let next = self.rows.get(row + 1).map_or(self.ends.len(), |r| r.0);
        next - self.rows[row].0
    }

    /// The line record `row` starts on.
    pub(crate) fn line(&self, row: usize) -> u64 {
        self.rows[row].1
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Before the first byte of a record.
    RecordStart,
    /// Before the first byte of a field (after a delimiter).
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote character inside a quoted field: closing, or the first of a doubled pair.
    QuoteInQuoted,
    /// The escape character inside a quoted field: the next byte is literal.
    Escaped,
    Comment,
}

/// Splits a byte stream into records.
pub(crate) struct Tokenizer<R> {
    reader: R,
    scanner: Scanner,
    started: bool,
    done: bool,
}

/// The tokenizer's state between buffers.
#[derive(Debug)]
struct Scanner {
    syntax: Syntax,
    state: State,
    /// The physical line the next byte is on.
    line: u64,
    /// The previous byte was `\r` (so a `\n` right after it ends no further line).
    after_cr: bool,
    /// Where the current record started: its line, and its first byte in `data`.
    record_line: u64,
    record_start: usize,
    /// Where the current quoted field opened.
    quote_line: u64,
    field_quoted: bool,
    /// Whether the current record has a line end inside a quoted field.
    multiline: bool,
    /// The line of the last byte of a quoted field.
    last_line: u64,
    /// Records expected to have this many fields (`None`: the first record sets it).
    width: Option<usize>,
}

impl<R> std::fmt::Debug for Tokenizer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("line", &self.scanner.line)
            .finish_non_exhaustive()
    }
}

impl<R: BufRead> Tokenizer<R> {
    pub(crate) fn new(reader: R, syntax: Syntax, width: Option<usize>) -> Self {
        Self {
            reader,
            scanner: Scanner {
                syntax,
                state: State::RecordStart,
                line: 1,
                after_cr: false,
                record_line: 1,
                record_start: 0,
                quote_line: 1,
                field_quoted: false,
                multiline: false,
                last_line: 1,
                width,
            },
            started: false,
            done: false,
        }
    }

    /// Fill `out` with up to `max_rows` records; `Ok(false)` once the stream is exhausted and
    /// `out` is empty.
    pub(crate) fn next_batch(
        &mut self,
        out: &mut Records,
        max_rows: usize,
    ) -> Result<bool, TokenError> {
        out.clear();
        // A batch ends between records: a record in progress is always finished first.
        loop {
            let full = self.scanner.between_records() && out.len() >= max_rows;
            if self.done || full {
                break;
            }
            let buf = self.reader.fill_buf().map_err(TokenError::Io)?;
            if buf.is_empty() {
                self.scanner.finish(out)?;
                self.done = true;
                break;
            }
            if !self.started {
                self.started = true;
                if buf.starts_with(b"\xEF\xBB\xBF") {
                    self.reader.consume(3);
                    continue;
                }
            }
            let used = self.scanner.scan(buf, out, max_rows)?;
            self.reader.consume(used);
        }
        Ok(!out.rows.is_empty())
    }
}

impl Scanner {
    fn between_records(&self) -> bool {
        matches!(self.state, State::RecordStart | State::Comment)
    }

    /// Tokenize from `buf` until it is used up or `out` holds `max_rows` records; returns the
    /// bytes used.
    fn scan(
        &mut self,
        buf: &[u8],
        out: &mut Records,
        max_rows: usize,
    ) -> Result<usize, TokenError> {
        let Syntax {
            delimiter, quote, ..
        } = self.syntax;
        let escape = self.syntax.escape.filter(|e| *e != quote);
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::RecordStart => {
                    if b == b'\n' || b == b'\r' {
                        self.newline(b);
                        i += 1;
                        continue;
                    }
                    self.after_cr = false;
                    if out.len() >= max_rows {
                        return Ok(i);
                    }
                    if Some(b) == self.syntax.comment {
                        self.state = State::Comment;
                        i += 1;
                        continue;
                    }
                    self.record_line = self.line;
                    self.record_start = out.data.len();
                    self.multiline = false;
                    out.rows.push((out.ends.len(), self.line));
                    self.state = State::FieldStart;
                }
                State::FieldStart => {
                    self.field_quoted = false;
                    if b == quote {
                        self.field_quoted = true;
                        self.quote_line = self.line;
                        self.state = State::Quoted;
                        i += 1;
                    } else {
                        self.state = State::Unquoted;
                    }
                }
                State::Unquoted => {
                    // The common case: copy up to the next delimiter or line end at once.
                    let run = buf[i..]
                        .iter()
                        .position(|&c| c == delimiter || c == b'\n' || c == b'\r')
                        .unwrap_or(buf.len() - i);
                    out.data.extend_from_slice(&buf[i..i + run]);
                    i += run;
                    self.check_size(out)?;
                    let Some(&c) = buf.get(i) else { break };
                    self.end_field(out);
                    i += 1;
                    if c == delimiter {
                        self.state = State::FieldStart;
                    } else {
                        self.newline(c);
                        self.end_record(out)?;
                    }
                }
                State::Quoted => {
                    let run = buf[i..]
                        .iter()
                        .position(|&c| c == quote || Some(c) == escape)
                        .unwrap_or(buf.len() - i);
                    let chunk = &buf[i..i + run];
                    self.count_lines(chunk);
                    out.data.extend_from_slice(chunk);
                    i += run;
                    self.check_size(out)?;
                    let Some(&c) = buf.get(i) else { break };
                    i += 1;
                    self.last_line = self.line;
                    self.state = if c == quote {
                        State::QuoteInQuoted
                    } else {
                        State::Escaped
                    };
                }
                State::Escaped => {
                    self.count_lines(&buf[i..=i]);
                    out.data.push(b);
                    i += 1;
                    self.state = State::Quoted;
                }
                State::QuoteInQuoted => {
                    if b == quote {
                        out.data.push(quote);
                        i += 1;
                        self.state = State::Quoted;
                    } else if b == delimiter {
                        self.end_field(out);
                        i += 1;
                        self.state = State::FieldStart;
                    } else if b == b'\n' || b == b'\r' {
                        self.end_field(out);
                        self.newline(b);
                        i += 1;
                        self.end_record(out)?;
                    } else {
                        // Text after the closing quote belongs to the field.
                        self.state = State::Unquoted;
                    }
                }
                State::Comment => {
                    let run = buf[i..]
                        .iter()
                        .position(|&c| c == b'\n' || c == b'\r')
                        .unwrap_or(buf.len() - i);
                    i += run;
                    if let Some(&c) = buf.get(i) {
                        self.newline(c);
                        i += 1;
                        self.state = State::RecordStart;
                    }
                }
            }
        }
        Ok(buf.len())
    }

    /// A line end byte: counts a line unless it is the `\n` of a `\r\n`.
    fn newline(&mut self, b: u8) {
        if !(b == b'\n' && self.after_cr) {
            self.line += 1;
        }
        self.after_cr = b == b'\r';
    }

    /// Line ends inside a quoted field.
    fn count_lines(&mut self, chunk: &[u8]) {
        for &c in chunk {
            if c == b'\n' || c == b'\r' {
                self.newline(c);
                self.multiline = true;
            } else {
                self.after_cr = false;
            }
        }
    }

    fn check_size(&self, out: &Records) -> Result<(), TokenError> {
        let size = out.data.len() - self.record_start;
        if size > self.syntax.max_record_bytes {
            let hint = if self.state == State::Quoted {
                format!(
                    "; the quoted field opened on line {} has not closed (an unterminated quote?)",
                    self.quote_line
                )
            } else {
                "; is the line ending or delimiter right?".to_string()
            };
            return Err(TokenError::At {
                line: self.record_line,
                message: format!(
                    "a record longer than {} MiB (csv.max_record_mb){hint}",
                    self.syntax.max_record_bytes >> 20
                ),
            });
        }
        Ok(())
    }

    fn end_field(&mut self, out: &mut Records) {
        out.ends.push(out.data.len());
        out.quoted.push(self.field_quoted);
        self.field_quoted = false;
    }

    fn end_record(&mut self, out: &mut Records) -> Result<(), TokenError> {
        self.state = State::RecordStart;
        let row = out.len() - 1;
        let got = out.width(row);
        let expected = *self.width.get_or_insert(got);
        if got == expected {
            return Ok(());
        }
        // A record spanning lines through a quoted field whose count is off: most likely a
        // quote that did not close where it should have.
        let hint = if self.multiline {
            format!(
                " (a quoted field runs from line {} to line {}: an unterminated quote?)",
                self.quote_line, self.last_line
            )
        } else {
            String::new()
        };
        Err(TokenError::At {
            line: self.record_line,
            message: format!("expected {expected} fields, got {got}{hint}"),
        })
    }

    fn finish(&mut self, out: &mut Records) -> Result<(), TokenError> {
        match self.state {
            State::RecordStart | State::Comment => Ok(()),
            State::Quoted | State::Escaped => Err(TokenError::At {
                line: self.quote_line,
                message: "unterminated quote: the quoted field that opens on this line never \
                          closes before the end of the file"
                    .into(),
            }),
            State::FieldStart | State::Unquoted | State::QuoteInQuoted => {
                self.end_field(out);
                self.end_record(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax() -> Syntax {
        Syntax {
            delimiter: b',',
            quote: b'"',
            escape: None,
            comment: None,
            max_record_bytes: 1 << 20,
        }
    }

    /// Each record's fields: text, quoted, the record's line.
    type Fields = Vec<Vec<(String, bool, u64)>>;

    fn all(text: &str, syntax: Syntax) -> Result<Fields, String> {
        // A tiny buffer, so records straddle buffer refills.
        let reader = std::io::BufReader::with_capacity(3, text.as_bytes());
        let mut t = Tokenizer::new(reader, syntax, None);
        let mut out = Records::default();
        let mut rows = Vec::new();
        loop {
            match t.next_batch(&mut out, 2) {
                Ok(false) => return Ok(rows),
                Ok(true) => {}
                Err(TokenError::At { line, message }) => return Err(format!("{line}: {message}")),
                Err(TokenError::Io(e)) => return Err(e.to_string()),
            }
            for r in 0..out.len() {
                rows.push(
                    (0..out.width(r))
                        .map(|c| {
                            let (b, q) = out.field(r, c);
                            (String::from_utf8_lossy(b).into_owned(), q, out.line(r))
                        })
                        .collect(),
                );
            }
        }
    }

    fn fields(text: &str) -> Vec<Vec<String>> {
        all(text, syntax())
            .expect("tokenizes")
            .into_iter()
            .map(|r| r.into_iter().map(|f| f.0).collect())
            .collect()
    }

    #[test]
    fn quoted_fields_are_told_from_unquoted_ones() {
        let rows = all("a,\"\",b\n\"NA\",NA,\"x\"\"y\"\n", syntax()).expect("ok");
        let flags: Vec<Vec<bool>> = rows
            .iter()
            .map(|r| r.iter().map(|f| f.1).collect())
            .collect();
        assert_eq!(
            flags,
            vec![vec![false, true, false], vec![true, false, true]]
        );
        assert_eq!(rows[1][2].0, "x\"y");
    }

    #[test]
    fn lines_end_three_ways_and_quoted_newlines_count() {
        let rows = all("a,b\r\nc,\"d\ne\"\rf,g\n\n\nh,i", syntax()).expect("ok");
        let lines: Vec<u64> = rows.iter().map(|r| r[0].2).collect();
        assert_eq!(lines, vec![1, 2, 4, 7]);
        assert_eq!(rows[1][1].0, "d\ne");
    }

    #[test]
    fn an_unclosed_quote_is_an_error_at_the_line_it_opens() {
        let err = all("id,v\n1,a\n2,\"b\n3,c\n", syntax()).expect_err("unterminated");
        assert!(err.starts_with("3: unterminated quote"), "{err}");
        let err = all("id,v,w\n1,a,b\n2,\"b,c\n3,d,e\"\n", syntax()).expect_err("short row");
        assert!(
            err.starts_with(
                "3: expected 3 fields, got 2 (a quoted field runs from line 3 to line 4"
            ),
            "{err}"
        );
    }

    #[test]
    fn comments_escapes_trailing_text_and_bom() {
        let mut s = syntax();
        s.comment = Some(b'#');
        s.escape = Some(b'\\');
        assert_eq!(
            fields_with("\u{feff}# note\na,\"b\\\"c\"d\n", s),
            vec![vec!["a".to_string(), "b\"cd".to_string()]]
        );
        assert_eq!(fields("x,\n"), vec![vec!["x".to_string(), String::new()]]);
    }

    fn fields_with(text: &str, s: Syntax) -> Vec<Vec<String>> {
        all(text, s)
            .expect("tokenizes")
            .into_iter()
            .map(|r| r.into_iter().map(|f| f.0).collect())
            .collect()
    }

    #[test]
    fn records_past_the_limit_are_refused() {
        let mut s = syntax();
        s.max_record_bytes = 8;
        let err = all("a,b\n1,0123456789\n", s).expect_err("too long");
        assert!(err.starts_with("2: a record longer than"), "{err}");
        let err = all("a,\"0123456789", s).expect_err("too long");
        assert!(err.contains("opened on line 1 has not closed"), "{err}");
    }
}
