//! JSON log lines written straight from each event: one object per line with
//! `timestamp`, `level`, `target`, `message`, the event's fields, and the current request's
//! `request_id` and `trace_id` (from the request's task-local ids, so a line needs no
//! span). tracing-subscriber's JSON formatter builds a map per event and re-reads the
//! request span's fields from their stored JSON; an access line per request made that the
//! largest cost of a cheap request. This layer keeps one reusable buffer per thread and
//! hands the finished line to the batched log writer (`log_writer`).

use std::{cell::RefCell, fmt::Write as _, io::Write as _};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{Layer, fmt::MakeWriter, layer::Context};

use crate::context;

pub struct JsonLines<W> {
    writer: W,
}

impl<W> JsonLines<W> {
    pub fn new(writer: W) -> Self {
        Self { writer }
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        thread_local! {
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
        }
        LINE.with(|line| {
            // Re-entered only if writing logs itself logs; then format into a fresh one.
            let mut fresh = String::new();
            let mut borrowed = line.try_borrow_mut();
            let line = match &mut borrowed {
                Ok(line) => &mut **line,
                Err(_) => &mut fresh,
            };
            line.clear();
            format_line(line, event);
            let _ = self.writer.make_writer().write_all(line.as_bytes());
            // Keep the buffer's memory bounded after an unusually long line.
            if line.capacity() > 64 * 1024 {
                *line = String::with_capacity(512);
            }
        });
    }
}

fn format_line(line: &mut String, event: &Event<'_>) {
    let metadata = event.metadata();
    line.push_str("{\"timestamp\":\"");
    let _ = write!(
        line,
        "{}",
        humantime::format_rfc3339_micros(std::time::SystemTime::now())
    );
    line.push_str("\",\"level\":\"");
    line.push_str(metadata.level().as_str());
    line.push_str("\",\"target\":");
    push_string(line, metadata.target());
    let mut fields = Fields {
        line,
        has_request_id: false,
    };
    event.record(&mut fields);
    if !fields.has_request_id {
        context::with_current(|ids| {
            line.push_str(",\"request_id\":");
            push_string(line, &ids.request_id);
            if let Some(trace_id) = &ids.trace_id {
                line.push_str(",\"trace_id\":");
                push_string(line, trace_id);
            }
        });
    }
    line.push_str("}\n");
}

struct Fields<'a> {
    line: &'a mut String,
    /// The access line names its request itself (it is written after the request's task
    /// has let go of its ids).
    has_request_id: bool,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        if field.name() == "request_id" {
            self.has_request_id = true;
        }
        self.line.push(',');
        push_string(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_string(self.line, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            self.line.push_str(ryu::Buffer::new().format_finite(value));
        } else {
            self.line.push_str("null");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        self.line.push('"');
        let _ = write!(Escaped(self.line), "{value:?}");
        self.line.push('"');
    }
}

/// `value` as a JSON string.
fn push_string(line: &mut String, value: &str) {
    line.push('"');
    let _ = Escaped(line).write_str(value);
    line.push('"');
}

/// Writes what it is given escaped for the inside of a JSON string.
struct Escaped<'a>(&'a mut String);

impl std::fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut start = 0;
        for (i, byte) in s.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            self.0.push_str(&s[start..i]);
            if escape.is_empty() {
                let _ = write!(self.0, "\\u{byte:04x}");
            } else {
                self.0.push_str(escape);
            }
            start = i + 1;
        }
        self.0.push_str(&s[start..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_requires() {
        let mut line = String::new();
        push_string(&mut line, "a\"b\\c\nd\u{1}é\u{7f}");
        let parsed: String = serde_json::from_str(&line).expect("valid JSON string");
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é\u{7f}");
    }

    #[test]
    fn lines_are_json_objects_with_typed_fields() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(JsonLines::new(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "access",
                status = 200u16,
                latency_ms = 1.5,
                grpc_code = Option::<&str>::None,
                principal = Some(7i64),
                path = "/api/\"x\"",
                method = %"GET",
                "request finished"
            );
        });
        let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
        assert!(text.ends_with('\n'));
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).expect("JSON line");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "access");
        assert_eq!(line["message"], "request finished");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["principal"], 7);
        assert!(line.get("grpc_code").is_none(), "None fields are left out");
        assert_eq!(line["path"], "/api/\"x\"");
        assert_eq!(line["method"], "GET");
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
