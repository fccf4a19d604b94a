//! Log output: tracing to stdout, in one of three shapes.
//!
//! - on a terminal: human-readable, coloured, with timestamps;
//! - under systemd (`JOURNAL_STREAM` is set): the same lines without
//!   colours or timestamps, since the journal records its own;
//! - `[log] format = "json"`: one JSON object per line, with the fields of
//!   the enclosing spans (the request id among them) merged in.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is the config's `log.level`;
/// `SCIM2LDAP_LOG` overrides it.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter: Targets = std::env::var("SCIM2LDAP_LOG")
        .unwrap_or_else(|_| level.to_string())
        .parse()
        .map_err(|_| {
            format!("log.level {level:?} is not a level such as info or scim2ldap=debug")
        })?;
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields)
                    .event_format(JsonEvent),
            )
            .try_init(),
        LogFormat::Text if journald => registry
            .with(
                // No colours in the span fields either (the layer's
                // setting governs those).
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .event_format(SyslogPrefix(
                        tracing_subscriber::fmt::format()
                            .with_target(false)
                            .with_ansi(false)
                            .without_time(),
                    )),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(terminal),
            )
            .try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

/// Prefixes each line with its syslog priority (`<3>` error ... `<7>`
/// debug), which journald turns into the entry's priority, so that
/// `journalctl -p warning` works.
struct SyslogPrefix<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

fn syslog_priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// Collects an event's or a span's fields into a JSON object.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), value.into());
    }
}

/// Stores span fields as a JSON object, so that [`JsonEvent`] can merge
/// them into each line.
struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut map = Map::new();
        fields.record(&mut JsonVisitor(&mut map));
        write!(writer, "{}", Value::Object(map))
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut map: Map<String, Value> = serde_json::from_str(&current.fields).unwrap_or_default();
        fields.record(&mut JsonVisitor(&mut map));
        current.fields = Value::Object(map).to_string();
        Ok(())
    }
}

/// One JSON object per event: time, level, the span fields (outermost
/// first), then the event's own fields (`message` among them).
struct JsonEvent;

impl<S, N> FormatEvent<S, N> for JsonEvent
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut map = Map::new();
        map.insert(
            "time".into(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        map.insert(
            "level".into(),
            event
                .metadata()
                .level()
                .as_str()
                .to_ascii_lowercase()
                .into(),
        );
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(f)) = serde_json::from_str::<Value>(&fields.fields) {
                        for (k, v) in f {
                            let key = if k == "id" {
                                format!("{}_id", span.name())
                            } else {
                                k
                            };
                            map.insert(key, v);
                        }
                    }
                }
            }
        }
        event.record(&mut JsonVisitor(&mut map));
        writeln!(writer, "{}", Value::Object(map))
    }
}
