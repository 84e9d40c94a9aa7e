//! The status web page (`GET /`): one self-contained HTML document rendered on the server
//! from the same [`Status`] `GET /status` serves, so it is complete with JavaScript off. Its
//! stylesheet and script are embedded in the binary (`assets/`); the script polls `/status`
//! (one request at a time, at most once a second) and re-renders the same structure.
//!
//! Every text from the status is HTML-escaped. The page is read-only: it has no form, button
//! or write request. A Content-Security-Policy allows only the embedded style and script
//! (by hash) and requests to the page's own origin.

use std::fmt::Write as _;
use std::sync::LazyLock;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::observe::status::{ActionRecord, LayerStatus, ReleaseStatus, RevisionInfo, Status};

const STYLE: &str = include_str!("assets/status.css");
const SCRIPT: &str = include_str!("assets/status.js");

/// Columns of the layers table (the detail rows span all but the first).
const COLUMNS: [&str; 9] = [
    "layer / release",
    "phase",
    "action",
    "helm revision",
    "attempts",
    "transient retries",
    "started (UTC)",
    "ready (UTC)",
    "message",
];

/// The `Content-Security-Policy` of the page: the embedded style and script only, fetches
/// to the same origin, no forms, no frames.
pub fn content_security_policy() -> &'static str {
    static CSP: LazyLock<String> = LazyLock::new(|| {
        let hash = |text: &str| {
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
        };
        format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash(STYLE),
            hash(SCRIPT)
        )
    });
    &CSP
}

/// `text` with `&`, `<`, `>`, `"` and `'` replaced by entities (safe in text and quoted
/// attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page for `status`.
pub fn render(status: &Status) -> String {
    let mut html = String::with_capacity(8 * 1024);
    html.push_str(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>strata status</title>\n<style>",
    );
    html.push_str(STYLE);
    html.push_str("</style>\n</head>\n<body data-rendered=\"server\">\n<main id=\"status\">");
    html.push_str(&render_main(status));
    html.push_str(
        "</main>\n<footer>Read-only view of <a href=\"status\">/status</a>. \
         <span id=\"refresh\">Rendered by the agent; reload to refresh.</span></footer>\n<script>",
    );
    html.push_str(SCRIPT);
    html.push_str("</script>\n</body>\n</html>\n");
    html
}

/// The content of `<main>`; `assets/status.js` builds the same markup from `/status`.
pub fn render_main(s: &Status) -> String {
    let mut h = String::new();
    let phase = format!("{:?}", s.phase);
    let _ = write!(
        h,
        "<header><h1>strata</h1>{}</header>",
        phase_badge(&phase, "overall")
    );

    h.push_str("<section class=\"revision\"><h2>Revision</h2><dl>");
    match &s.revision {
        Some(r) => {
            let _ = write!(
                h,
                "<dt>commit</dt><dd><code class=\"commit\">{}</code></dd><dt>fetched at</dt><dd>{}</dd>",
                escape(&r.commit),
                escape(&r.fetched_at)
            );
            if let Some(p) = &r.profiles_path {
                let _ = write!(h, "<dt>profile list</dt><dd>{}</dd>", escape(p));
            }
            if let Some(c) = &r.cluster_name {
                let _ = write!(h, "<dt>cluster</dt><dd>{}</dd>", escape(c));
            }
        }
        None => h.push_str("<dt>commit</dt><dd>none yet</dd>"),
    }
    let _ = write!(
        h,
        "<dt>last applied</dt><dd class=\"last-applied\">{}</dd>",
        s.last_applied_revision
            .as_ref()
            .map_or_else(|| "none yet".to_string(), applied)
    );
    if let Some(l) = &s.leader {
        let _ = write!(
            h,
            "<dt>leader</dt><dd>{} (lease {}, this agent {})</dd>",
            l.holder.as_deref().map_or_else(|| "none".into(), escape),
            escape(&l.lease),
            escape(&l.identity)
        );
    }
    if let Some(w) = &s.writer {
        let _ = write!(h, "<dt>writer</dt><dd>{}</dd>", escape(w));
    }
    h.push_str("</dl></section>");

    if s.last_error.is_some() || s.rejected_revision.is_some() {
        h.push_str("<section class=\"errors\"><h2>Errors</h2>");
        if let Some(e) = &s.last_error {
            let _ = write!(h, "<p class=\"last-error message\">{}</p>", escape(e));
        }
        if let Some(r) = &s.rejected_revision {
            let _ = write!(
                h,
                "<h3>Rejected revision <code>{}</code> (fetched at {})</h3><ul class=\"problems\">",
                escape(&r.commit),
                escape(&r.fetched_at)
            );
            for p in &r.problems {
                let _ = write!(h, "<li class=\"problem\">{}</li>", escape(&p.to_string()));
            }
            h.push_str("</ul>");
        }
        h.push_str("</section>");
    }

    h.push_str("<section class=\"layers\"><h2>Layers</h2>");
    if s.layers.is_empty() {
        h.push_str("<p>No layers yet.</p>");
    } else {
        h.push_str("<table><thead><tr>");
        for c in COLUMNS {
            let _ = write!(h, "<th>{c}</th>");
        }
        h.push_str("</tr></thead>");
        for layer in &s.layers {
            render_layer(&mut h, layer);
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
    h
}

fn applied(r: &RevisionInfo) -> String {
    format!(
        "<code>{}</code> (fetched at {})",
        escape(&r.commit),
        escape(&r.fetched_at)
    )
}

fn phase_badge(phase: &str, class: &str) -> String {
    let p = escape(phase);
    format!("<span class=\"phase {class} p-{p}\">{p}</span>")
}

fn render_layer(h: &mut String, layer: &LayerStatus) {
    let id = escape(&layer.layer.to_string());
    let started = layer
        .releases
        .iter()
        .filter_map(|r| r.started_at.as_deref())
        .min();
    let took = match (started, layer.ready_at.as_deref()) {
        (Some(a), Some(b)) => duration(a, b).map(|d| format!("took {d}")),
        _ => None,
    };
    let _ = write!(
        h,
        "<tbody class=\"layer\" id=\"layer-{id}\"><tr class=\"layer-row\"><th scope=\"row\">layer {id}</th><td>{}</td><td colspan=\"4\"></td><td>{}</td><td>{}</td><td>{}</td></tr>",
        phase_badge(&format!("{:?}", layer.phase), "layer-phase"),
        time(started),
        time(layer.ready_at.as_deref()),
        escape(&took.unwrap_or_default())
    );
    for r in &layer.releases {
        render_release(h, r);
    }
    h.push_str("</tbody>");
}

fn render_release(h: &mut String, r: &ReleaseStatus) {
    let _ = write!(
        h,
        "<tr class=\"release\" data-release=\"{ns}/{name}\"><td>{name} <small>{ns} · {chart} {version}</small></td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"message\">{}</td></tr>",
        phase_badge(r.phase.as_str(), "release-phase"),
        escape(r.action.as_deref().unwrap_or("")),
        r.helm_revision.map_or_else(String::new, |n| n.to_string()),
        r.attempts,
        r.transient_retries,
        time(r.started_at.as_deref()),
        time(r.ready_at.as_deref()),
        escape(r.message.as_deref().unwrap_or("")),
        ns = escape(&r.namespace),
        name = escape(&r.name),
        chart = escape(&r.chart),
        version = escape(&r.version),
    );
    let mut items = String::new();
    for n in &r.not_ready {
        let at = n
            .namespace
            .as_deref()
            .map_or_else(String::new, |ns| format!("{}/", escape(ns)));
        let _ = write!(
            items,
            "<li class=\"not-ready\">not ready: {} {at}{}: {}</li>",
            escape(&n.kind),
            escape(&n.name),
            escape(&n.reason)
        );
    }
    if let Some(e) = &r.last_transient_error {
        let _ = write!(
            items,
            "<li class=\"transient\">last transient error: {}</li>",
            escape(e)
        );
    }
    if let Some(d) = &r.drift {
        for o in &d.objects {
            let at = o
                .namespace
                .as_deref()
                .map_or_else(String::new, |ns| format!("{}/", escape(ns)));
            let what = if o.missing {
                "missing".to_owned()
            } else {
                let more = if o.more_paths > 0 {
                    format!(" and {} more", o.more_paths)
                } else {
                    String::new()
                };
                format!("changed {}{more}", escape(&o.paths.join(", ")))
            };
            let _ = write!(
                items,
                "<li class=\"drifted\">drift ({}): {} {at}{}: {what}</li>",
                escape(&d.mode),
                escape(&o.kind),
                escape(&o.name),
            );
        }
    }
    for (class, rec) in [
        ("recovery", &r.last_recovery),
        ("remediation", &r.last_remediation),
        ("drift", &r.last_drift),
    ] {
        if let Some(a) = rec {
            action_item(&mut items, class, a);
        }
    }
    if !items.is_empty() {
        let _ = write!(
            h,
            "<tr class=\"detail\"><td></td><td colspan=\"{}\"><ul>{items}</ul></td></tr>",
            COLUMNS.len() - 1
        );
    }
}

fn action_item(out: &mut String, class: &str, a: &ActionRecord) {
    let _ = write!(
        out,
        "<li class=\"{class}\">last {class}: {} at {}: {}</li>",
        escape(&a.kind),
        escape(&a.at),
        escape(&a.message)
    );
}

/// A table cell's time: the time of day of an RFC 3339 UTC time (`…T10:00:01.5Z` ->
/// `10:00:01`), the whole value in `datetime` and `title`; other values as they are.
fn time(t: Option<&str>) -> String {
    let Some(t) = t else {
        return String::new();
    };
    let short = t
        .strip_suffix('Z')
        .and_then(|t| t.split_once('T'))
        .map_or(t, |(_, clock)| clock.split('.').next().unwrap_or(clock));
    let t = escape(t);
    format!(
        "<time datetime=\"{t}\" title=\"{t}\">{}</time>",
        escape(short)
    )
}

/// `to - from` as e.g. `3.4s`; `None` when a time does not parse or `to` is earlier.
fn duration(from: &str, to: &str) -> Option<String> {
    let a: jiff::Timestamp = from.parse().ok()?;
    let b: jiff::Timestamp = to.parse().ok()?;
    let ms = b.as_millisecond() - a.as_millisecond();
    (ms >= 0).then(|| format!("{:.1}s", ms as f64 / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::status::{
        LayerId, LayerPhase, NotReady, OverallPhase, ProblemView, RejectedRevision, ReleasePhase,
    };

    fn info(commit: &str) -> RevisionInfo {
        RevisionInfo {
            mirrored: Vec::new(),
            commit: commit.into(),
            fetched_at: "2026-12-05T10:00:00Z".into(),
            profiles_path: Some("profiles.yaml".into()),
            cluster_name: None,
        }
    }

    fn progressing() -> Status {
        let mut web = ReleaseStatus::pending("web", "web", "apps", "web", "1.2.3");
        web.phase = ReleasePhase::Waiting;
        web.action = Some("install".into());
        web.attempts = 2;
        web.transient_retries = 3;
        web.helm_revision = Some(7);
        web.started_at = Some("2026-12-05T10:00:01Z".into());
        web.message = Some("failed: <script>alert('x')</script> & more".into());
        web.not_ready.push(NotReady {
            kind: "Deployment".into(),
            name: "web-control".into(),
            namespace: Some("apps".into()),
            reason: "0/1 replicas available".into(),
        });
        web.last_remediation = Some(ActionRecord {
            kind: "remediate-rollback".into(),
            at: "2026-12-05T09:59:00Z".into(),
            message: "rolled back to 6".into(),
        });
        web.drift = Some(crate::observe::status::DriftStatus {
            mode: "warn".into(),
            since: "2026-12-05T10:00:01Z".into(),
            objects: vec![
                crate::observe::status::DriftedObject {
                    kind: "Secret".into(),
                    namespace: Some("apps".into()),
                    name: "web-creds".into(),
                    missing: false,
                    paths: vec!["/data/password".into()],
                    more_paths: 2,
                },
                crate::observe::status::DriftedObject {
                    kind: "ClusterRole".into(),
                    namespace: None,
                    name: "web".into(),
                    missing: true,
                    paths: Vec::new(),
                    more_paths: 0,
                },
            ],
            more_objects: 0,
        });
        let mut certs = ReleaseStatus::pending("certs", "certs", "certs", "certs", "1.0.0");
        certs.phase = ReleasePhase::Ready;
        certs.started_at = Some("2026-12-05T10:00:00Z".into());
        certs.ready_at = Some("2026-12-05T10:00:02.500Z".into());
        Status {
            removals: Vec::new(),
            phase: OverallPhase::Progressing,
            revision: Some(info("abc123")),
            last_applied_revision: Some(info("old999")),
            layers: vec![
                LayerStatus {
                    layer: LayerId::Number(1),
                    phase: LayerPhase::Ready,
                    ready_at: certs.ready_at.clone(),
                    releases: vec![certs],
                },
                LayerStatus {
                    layer: LayerId::Unlayered,
                    phase: LayerPhase::Progressing,
                    ready_at: None,
                    releases: vec![web],
                },
            ],
            ..Status::default()
        }
    }

    #[test]
    fn escape_replaces_markup_characters() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_script_in_a_message_is_escaped() {
        let page = render(&progressing());
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(
            page.contains("failed: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"),
            "{page}"
        );
        // The only script element is the embedded one.
        assert_eq!(page.matches("<script").count(), 1, "{page}");
    }

    #[test]
    fn layers_releases_and_details_are_listed() {
        let page = render(&progressing());
        for needle in [
            "<title>strata status</title>",
            "p-Progressing\">Progressing</span>",
            "<code class=\"commit\">abc123</code>",
            "<dd class=\"last-applied\"><code>old999</code>",
            "id=\"layer-1\"",
            "<th scope=\"row\">layer 1</th>",
            "id=\"layer-unlayered\"",
            "layer-phase p-Ready\">Ready</span>",
            "took 2.5s",
            "<td><time datetime=\"2026-12-05T10:00:02.500Z\" title=\"2026-12-05T10:00:02.500Z\">10:00:02</time></td>",
            "data-release=\"certs/certs\"",
            "data-release=\"apps/web\"",
            "<small>apps · web 1.2.3</small>",
            "release-phase p-Waiting\">Waiting</span></td><td>install</td><td class=\"num\">7</td><td class=\"num\">2</td><td class=\"num\">3</td>",
            "<li class=\"not-ready\">not ready: Deployment apps/web-control: 0/1 replicas available</li>",
            "last remediation: remediate-rollback at 2026-12-05T09:59:00Z: rolled back to 6",
            "<li class=\"drifted\">drift (warn): Secret apps/web-creds: changed /data/password and 2 more</li>",
            "<li class=\"drifted\">drift (warn): ClusterRole web: missing</li>",
        ] {
            assert!(page.contains(needle), "{needle} in {page}");
        }
        assert!(
            !render_main(&progressing()).contains("class=\"errors\""),
            "no errors section"
        );
    }

    #[test]
    fn a_rejected_revision_lists_its_problems() {
        let mut s = progressing();
        s.phase = OverallPhase::Degraded;
        s.last_error = Some("fetch failed: <timeout>".into());
        s.rejected_revision = Some(RejectedRevision {
            commit: "bad777".into(),
            fetched_at: "2026-12-05T11:00:00Z".into(),
            problems: vec![
                ProblemView {
                    file: "profiles.yaml".into(),
                    field: "profiles[web].version".into(),
                    message: "no version matches \"^9\"".into(),
                },
                ProblemView {
                    file: "charts/web/Chart.yaml".into(),
                    field: String::new(),
                    message: "missing".into(),
                },
            ],
        });
        let page = render(&s);
        for needle in [
            "p-Degraded\">Degraded</span>",
            "<p class=\"last-error message\">fetch failed: &lt;timeout&gt;</p>",
            "Rejected revision <code>bad777</code>",
            "<li class=\"problem\">profiles.yaml: profiles[web].version: no version matches &quot;^9&quot;</li>",
            "<li class=\"problem\">charts/web/Chart.yaml: missing</li>",
        ] {
            assert!(page.contains(needle), "{needle} in {page}");
        }
    }

    #[test]
    fn the_page_offers_no_write_action() {
        let page = render(&progressing()).to_ascii_lowercase();
        for banned in ["<form", "<button", "<input", "post", "retry"] {
            assert!(!page.contains(banned), "{banned} in the page");
        }
    }

    #[test]
    fn an_empty_status_renders() {
        let page = render(&Status::default());
        assert!(page.contains("p-Starting\">Starting</span>"), "{page}");
        assert!(page.contains("No layers yet."), "{page}");
    }

    #[test]
    fn the_policy_allows_exactly_the_embedded_style_and_script() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert_eq!(csp.matches("'sha256-").count(), 2, "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        // The elements' contents are exactly the hashed texts.
        let page = render(&Status::default());
        assert!(page.contains(&format!("<style>{STYLE}</style>")));
        assert!(page.contains(&format!("<script>{SCRIPT}</script>")));
    }
}
