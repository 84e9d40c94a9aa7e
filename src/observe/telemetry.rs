//! Logs and traces.
//!
//! Logs go to stderr through `tracing-subscriber`, as text or JSON, filtered by `--log-level`
//! (`RUST_LOG`-style directives, e.g. `info` or `info,strata=debug`).
//!
//! Traces are exported with OTLP over HTTP/protobuf when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (the other standard `OTEL_*` variables apply:
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, ...). The
//! agent's spans: `revision` (root, one per revision applied, field `commit`) -> `layer` ->
//! `release` -> `helm` (one per helm command). Failures set the span status to error.
//! [`Telemetry::shutdown`] flushes the exporter; call it before the process exits.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Errors while setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid --log-level {level:?}: {source}; use e.g. `info` or `info,strata=debug`")]
    LogLevel {
        level: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error(
        "cannot create the OTLP trace exporter from the OTEL_EXPORTER_OTLP_* variables: {0}; fix or unset them"
    )]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Installed telemetry; keep it until the end of `main` and call [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Whether the standard variables ask for OTLP trace export.
pub fn otlp_requested() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

/// Install the global subscriber. Call it before starting the tokio runtime (the OTLP HTTP
/// client is a blocking client living on the exporter's own thread).
pub fn init(format: LogFormat, level: &str) -> Result<Telemetry> {
    init_with(format, level, None)
}

/// [`init`] with the logs written to `console` (a terminal showing a progress board, see
/// [`crate::observe::view::Console`]) instead of stderr.
pub fn init_with(
    format: LogFormat,
    level: &str,
    console: Option<crate::observe::view::Console>,
) -> Result<Telemetry> {
    let writer = match console {
        Some(c) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(c),
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let filter = EnvFilter::builder()
        .parse(level)
        .map_err(|source| Error::LogLevel {
            level: level.to_string(),
            source,
        })?;
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };

    let provider = if otlp_requested() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?;
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name("strata");
        }
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build(),
        )
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("strata"))
            // Our own spans only: revision, layer, release, helm.
            .with_filter(EnvFilter::new("strata=info"))
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Flush and stop the trace exporter. Blocking: call it outside the tokio runtime.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("strata: flushing traces failed: {e}");
        }
    }
}

/// Mark the current span (and so its exported OTel span) as failed with `message`.
/// The span must declare the fields `otel.status_code` and `otel.status_description`
/// (as `tracing::field::Empty`).
pub fn record_error(span: &tracing::Span, message: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", message);
}
