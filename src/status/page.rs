//! The status page: plain server-rendered HTML, one request, no script, no
//! external asset (it must work on a server with no internet access), a
//! meta refresh every 30 s, and two inline SVG charts drawn here from the
//! history ring. Every text that comes from outside (resource names come
//! from the identity provider, messages from the directory) goes through
//! [`escape`].

use std::fmt::Write as _;

use super::{human_secs, Sample, Snapshot};

/// Seconds between the page's refreshes.
pub const REFRESH_SECS: u32 = 30;

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:70em}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse}td,th{padding:.25em .8em;text-align:left;border-bottom:1px solid #ddd;vertical-align:top}\
.ok{color:#176d2c;font-weight:bold}.bad{color:#b00020;font-weight:bold}.warn{color:#9a5b00;font-weight:bold}\
.charts{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:0}figcaption{font-size:.9em;color:#555}\
small{color:#666}td.name,td.reason{word-break:break-all;max-width:24em}";

/// The whole page. `history` is the per-minute ring, oldest first;
/// `applied_now` the entries applied in the unfinished minute.
pub fn render(s: &Snapshot, history: &[Sample], applied_now: u64) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>scim2ldap status</title><style>{STYLE}</style></head><body>\n"
    );
    let _ = write!(
        h,
        "<h1>scim2ldap status</h1>\n<p><small>version {} · ",
        escape(&s.version)
    );
    match (&s.started_at, s.uptime_secs) {
        (Some(at), Some(up)) => {
            let _ = write!(
                h,
                "running for {} (since {}) · ",
                human_secs(up),
                escape(at)
            );
        }
        _ => h.push_str("daemon not running · "),
    }
    let _ = writeln!(
        h,
        "generated {} · refreshes every {REFRESH_SECS} s · <a href=\"status.json\">JSON</a></small></p>",
        escape(&s.generated_at)
    );

    h.push_str("<table id=\"summary\">\n");
    let row = |h: &mut String, id: &str, k: &str, v: String| {
        let _ = writeln!(h, "<tr id=\"{id}\"><th>{k}</th><td>{v}</td></tr>");
    };
    let since = |x: &Option<String>| {
        x.as_ref()
            .map(|t| format!(" since {}", escape(t)))
            .unwrap_or_default()
    };
    row(
        &mut h,
        "directory",
        "Directory",
        match s.directory.state.as_str() {
            "up" => format!(
                "<span class=\"ok\">reachable</span>{}",
                since(&s.directory.since)
            ),
            "down" => format!(
                "<span class=\"bad\">UNREACHABLE</span>{} (writes are queued)",
                since(&s.directory.since)
            ),
            _ => "not checked".into(),
        },
    );
    row(
        &mut h,
        "pending",
        "Pending",
        format!(
            "<span class=\"count\">{}</span>{}",
            s.pending,
            match &s.oldest_pending {
                Some(o) => format!(
                    " · oldest: entry {} ({} {}), accepted {}",
                    o.seq,
                    escape(&o.kind),
                    escape(&o.name),
                    o.age_secs
                        .map(|a| format!("{} ago", human_secs(a)))
                        .unwrap_or_else(|| escape(&o.at))
                ),
                None => String::new(),
            }
        ),
    );
    row(
        &mut h,
        "parked",
        "Parked",
        if s.parked == 0 {
            "<span class=\"count ok\">0</span>".into()
        } else {
            format!(
                "<span class=\"count bad\">{}</span> · refused by the directory, listed below",
                s.parked
            )
        },
    );
    row(
        &mut h,
        "last-applied",
        "Last applied",
        match &s.last_applied {
            Some(l) => format!(
                "entry {} ({} {}) {}",
                l.seq,
                escape(&l.kind),
                escape(&l.name),
                l.age_secs
                    .map(|a| format!("{} ago", human_secs(a)))
                    .unwrap_or_else(|| escape(&l.at))
            ),
            None => "none yet".into(),
        },
    );
    if let Some(a) = &s.adoptions_last_day {
        row(
            &mut h,
            "adoptions",
            "Adoptions (last day)",
            format!("{} users, {} groups", a.users, a.groups),
        );
    }
    h.push_str("</table>\n");

    if let Some(tokens) = &s.tokens {
        h.push_str("<h2>Identity providers: last request per token</h2>\n<table id=\"tokens\"><tr><th>Token</th><th>Last request</th></tr>\n");
        for t in tokens {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(&t.name),
                match (&t.last_request_at, t.idle_secs) {
                    (Some(at), Some(i)) => format!("{} ago ({})", human_secs(i), escape(at)),
                    (Some(at), None) => escape(at),
                    _ => "<span class=\"warn\">none since the daemon started</span>".into(),
                }
            );
        }
        h.push_str("</table>\n");
    }

    h.push_str("<h2>The last hours</h2>\n<div class=\"charts\">\n");
    let mut depth: Vec<(u64, u64)> = history.iter().map(|x| (x.at, x.pending)).collect();
    let mut applied: Vec<(u64, u64)> = history.iter().map(|x| (x.at, x.applied)).collect();
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        depth.push((now.as_secs(), s.pending));
        applied.push((now.as_secs(), applied_now));
    }
    h.push_str(&chart(
        "chart-pending",
        "Queue depth (pending entries)",
        &depth,
        "#1f5fa8",
    ));
    h.push_str(&chart(
        "chart-applied",
        "Entries applied per minute",
        &applied,
        "#176d2c",
    ));
    h.push_str("</div>\n");

    let _ = writeln!(h, "<h2>Parked entries ({})</h2>", s.parked);
    if s.parked_entries.is_empty() {
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<p>Fix the cause (mapping, directory schema or access rights), then <code>scim2ldap journal retry SEQ</code>; or <code>scim2ldap journal skip SEQ</code> to drop the entry.</p>\n");
        h.push_str("<table id=\"parked-entries\"><tr><th>Seq</th><th>Resource</th><th>Name</th><th>Operation</th><th>Parked</th><th>LDAP result</th><th>Reason</th></tr>\n");
        for p in &s.parked_entries {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{} <small>{}</small></td><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
                p.seq,
                escape(&p.kind),
                escape(&p.id),
                escape(&p.name),
                escape(&p.op),
                escape(&p.parked_at),
                match (&p.ldap_result, p.ldap_code) {
                    (Some(r), Some(c)) => format!("{} ({c})", escape(r)),
                    _ => "-".into(),
                },
                escape(&p.message)
            );
        }
        h.push_str("</table>\n");
        if (s.parked_entries.len() as u64) < s.parked {
            let _ = writeln!(
                h,
                "<p>… and {} more: <code>scim2ldap journal list --state failed</code></p>",
                s.parked - s.parked_entries.len() as u64
            );
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// A line chart of `points` (unix seconds, value) as inline SVG, with the
/// maximum and the time span written out; an empty or one-point series
/// still draws its axes.
fn chart(id: &str, title: &str, points: &[(u64, u64)], color: &str) -> String {
    const W: f64 = 420.0;
    const H: f64 = 140.0;
    const L: f64 = 40.0; // left margin for the scale
    const B: f64 = 18.0; // bottom margin
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let (t0, t1) = match (points.first(), points.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (a.0, b.0),
        (Some(a), _) => (a.0.saturating_sub(60), a.0),
        _ => (0, 60),
    };
    let x = |t: u64| L + (W - L - 4.0) * ((t.saturating_sub(t0)) as f64 / (t1 - t0) as f64);
    let y = |v: u64| 4.0 + (H - B - 8.0) * (1.0 - v as f64 / max as f64);
    let mut path = String::new();
    for (i, (t, v)) in points.iter().enumerate() {
        let _ = write!(
            path,
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { " L" },
            x(*t),
            y(*v)
        );
    }
    let span = human_secs(t1 - t0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure><svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\">\
         <rect x=\"{L}\" y=\"4\" width=\"{iw}\" height=\"{ih}\" fill=\"#f7f7f7\" stroke=\"#ccc\"/>\
         <text x=\"{lx}\" y=\"12\" font-size=\"10\" text-anchor=\"end\">{max}</text>\
         <text x=\"{lx}\" y=\"{by}\" font-size=\"10\" text-anchor=\"end\">0</text>\
         <text x=\"{L}\" y=\"{ty}\" font-size=\"10\">{span} ago</text>\
         <text x=\"{rx}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"end\">now</text>",
        t = escape(title),
        iw = W - L - 4.0,
        ih = H - B - 8.0,
        lx = L - 4.0,
        by = H - B - 4.0,
        ty = H - 4.0,
        rx = W - 4.0,
    );
    if !path.is_empty() {
        let _ = write!(
            svg,
            "<path d=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>"
        );
    }
    if let Some((t, v)) = points.last() {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
            x(*t),
            y(*v)
        );
    }
    let _ = writeln!(
        svg,
        "</svg><figcaption>{}</figcaption></figure>",
        escape(title)
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::super::{Directory, ParkedEntry, Snapshot};
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            format: 1,
            version: "1.0.0".into(),
            generated_at: "2026-01-01T00:00:00Z".into(),
            daemon_running: true,
            started_at: Some("2026-01-01T00:00:00Z".into()),
            uptime_secs: Some(60),
            directory: Directory {
                state: "down".into(),
                since: Some("2026-01-01T00:00:00Z".into()),
            },
            pending: 7,
            parked: 1,
            oldest_pending: None,
            last_applied: None,
            parked_entries: vec![ParkedEntry {
                seq: 3,
                kind: "User".into(),
                id: "x".into(),
                name: "<script>alert(1)</script>".into(),
                op: "upsert".into(),
                accepted_at: "t".into(),
                parked_at: "t".into(),
                ldap_code: Some(65),
                ldap_result: Some("objectClassViolation".into()),
                message: "sn \"required\" & <missing>".into(),
            }],
            tokens: Some(vec![]),
            adoptions_last_day: None,
        }
    }

    #[test]
    fn names_from_the_identity_provider_are_escaped() {
        let page = render(&snapshot(), &[], 0);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("sn &quot;required&quot; &amp; &lt;missing&gt;"));
        assert!(page.contains("UNREACHABLE"));
        assert!(page.contains("<meta http-equiv=\"refresh\""));
        // Nothing is loaded from elsewhere.
        assert!(!page.contains("src="), "{page}");
        assert!(!page.contains("<link"), "{page}");
    }

    #[test]
    fn charts_draw_the_history() {
        let hist: Vec<Sample> = (0..5)
            .map(|i| Sample {
                at: 1_000_000 + i * 60,
                pending: i * 10,
                parked: 0,
                applied: 5,
            })
            .collect();
        let page = render(&snapshot(), &hist, 2);
        assert!(page.contains("<svg id=\"chart-pending\""));
        assert!(page.contains("<svg id=\"chart-applied\""));
        assert_eq!(page.matches("<path d=\"M").count(), 2, "{page}");
    }
}
