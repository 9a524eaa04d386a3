//! What `labelq` prints on standard output: one JSON document per line (or a line of text). A
//! reader that goes away (`labelq label *.jpg | head -1`) ends the output normally: the command
//! stops writing, and nothing panics.

use std::io::{self, Write};

use serde_json::Value;

pub struct Lines<W: Write = io::Stdout> {
    out: W,
    open: bool,
}

impl Lines {
    pub fn stdout() -> Self {
        Self::new(io::stdout())
    }
}

impl<W: Write> Lines<W> {
    pub fn new(out: W) -> Self {
        Self { out, open: true }
    }

    /// Writes one document on its own line; `false` once the output is gone.
    pub fn json(&mut self, document: &Value) -> bool {
        self.line(&document.to_string())
    }

    /// Writes a line of text; `false` once the output is gone.
    pub fn line(&mut self, text: &str) -> bool {
        if self.open {
            let written = self.out.write_all(text.as_bytes()).and_then(|()| self.out.write_all(b"\n"));
            if let Err(e) = written.and_then(|()| self.out.flush()) {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    let _ = writeln!(io::stderr(), "labelq: could not write the output: {e}");
                }
                self.open = false;
            }
        }
        self.open
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that took what it wanted and went away.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn documents_are_written_one_per_line() {
        let mut lines = Lines::new(Vec::new());
        assert!(lines.json(&serde_json::json!({ "a": 1 })));
        assert!(lines.json(&serde_json::json!([1, 2])));
        assert_eq!(String::from_utf8(lines.into_inner()).unwrap(), "{\"a\":1}\n[1,2]\n");
    }

    #[test]
    fn a_closed_pipe_ends_the_output_without_a_panic() {
        let mut lines = Lines::new(Closed);
        assert!(!lines.json(&serde_json::json!({ "a": 1 })));
        assert!(!lines.line("more"), "stays closed");
    }
}
