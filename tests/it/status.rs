//! The status: `scim2ldap status` (text and `--json`) through the admin
//! socket and from the store, `/status.json`, and the status page loaded
//! in a real headless browser (Debian's `chromium`) while the daemon has
//! pending and parked entries, with a screenshot kept as a test artifact
//! (`target/test-artifacts/status.png`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{cli, get_text, Harness};

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Carol", "familyName": "Kaye"},
        "active": true
    })
}

/// The browser, if installed.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|b| {
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(move |d| d.join(b))
        })
        .find(|p| p.is_file())
}

/// Runs headless chromium on `url` with `args` (e.g. `--dump-dom`);
/// returns its stdout. At most 90 s.
fn browse(browser: &PathBuf, profile: &std::path::Path, args: &[&str], url: &str) -> String {
    let out = std::process::Command::new("timeout")
        .arg("90")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1100,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The parked entry's name: the identity provider chooses it, so it holds
/// markup that must reach the page as text. Too long for slapd's RDN, so
/// the directory refuses it (other, 80) and it parks.
fn hostile_long_name() -> String {
    format!("<i>parked</i>{}", "l".repeat(240))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_pending_and_parked_entries_in_the_command_the_json_and_a_browser() {
    let mut h = Harness::start().await;
    let parked_name = hostile_long_name();
    let r = h.send("POST", "/Users", Some(user(&parked_name))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = h.send("POST", "/Users", Some(user("applied1"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Refused three times (1 s, 4 s apart), then parked.
    let started = Instant::now();
    while h.daemon().store.parked().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing parked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The directory goes away: new writes are queued, pending.
    h.slapd.stop().unwrap();
    for i in 0..3 {
        let r = h
            .send("POST", "/Users", Some(user(&format!("queued{i}"))))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let started = Instant::now();
    while h.daemon().writer.directory_up() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the writer did not notice the directory is down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The sampler sees it within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The JSON on the operational listener.
    let ops = h.daemon().ops_addr.expect("the operational listener");
    let (code, body) = get_text(&format!("http://{ops}/status.json")).await;
    assert_eq!(code, 200, "{body}");
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["format"], 1, "{s:#}");
    assert_eq!(s["pending"], 3, "{s:#}");
    assert_eq!(s["parked"], 1, "{s:#}");
    assert_eq!(s["directory"]["state"], "down", "{s:#}");
    assert!(s["directory"]["since"].is_string(), "{s:#}");
    assert_eq!(s["oldest_pending"]["name"], "queued0", "{s:#}");
    assert_eq!(s["last_applied"]["name"], "applied1", "{s:#}");
    assert_eq!(
        s["parked_entries"][0]["name"],
        parked_name.as_str(),
        "{s:#}"
    );
    assert_eq!(s["parked_entries"][0]["ldap_code"], 80, "{s:#}");
    assert_eq!(s["parked_entries"][0]["ldap_result"], "other", "{s:#}");
    let tokens = s["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 1, "{s:#}");
    assert!(tokens[0]["last_request_at"].is_string(), "{s:#}");
    assert!(s["uptime_secs"].is_u64(), "{s:#}");

    // The token's gauge, for the "identity provider silent" alert.
    let (_, metrics) = get_text(&format!("http://{ops}/metrics")).await;
    let name = tokens[0]["name"].as_str().unwrap();
    assert!(
        metrics.contains(&format!(
            "scim2ldap_token_last_request_timestamp_seconds{{token=\"{name}\"}} "
        )),
        "{metrics}"
    );

    // The command, through the admin socket.
    let config = h.config_path();
    let (ok, out, err) =
        tokio::task::block_in_place(|| cli(&["status", "--json", "--config", &config]));
    assert!(ok, "{err}");
    let c: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&c["pending"], &c["parked"]),
        (&json!(3), &json!(1)),
        "{out}"
    );
    assert_eq!(c["daemon_running"], true);
    let (ok, out, err) = tokio::task::block_in_place(|| cli(&["status", "--config", &config]));
    assert!(ok, "{err}");
    assert!(out.contains("UNREACHABLE since"), "{out}");
    assert!(out.contains("other (80)"), "{out}");
    assert!(out.contains("<i>parked</i>"), "{out}");

    // The page, in a real browser.
    match chromium() {
        None => eprintln!(
            "status page browser test SKIPPED: chromium is not installed (apt-get install chromium; scripts/install-deps.sh installs it)"
        ),
        Some(browser) => {
            let url = format!("http://{ops}/status");
            let profile = h.dir.join("chromium-profile");
            let dom = tokio::task::block_in_place(|| {
                browse(&browser, &profile, &["--dump-dom"], &url)
            });
            // The counts, the directory state, the parked entry's name and
            // reason, as the browser built the page.
            let row = |id: &str| {
                let at = dom
                    .find(&format!("<tr id=\"{id}\">"))
                    .unwrap_or_else(|| panic!("no row {id} in\n{dom}"));
                let end = dom[at..].find("</tr>").unwrap() + at;
                dom[at..end].to_string()
            };
            assert!(
                row("pending").contains("<span class=\"count\">3</span>"),
                "{}",
                row("pending")
            );
            assert!(row("parked").contains(">1</span>"), "{}", row("parked"));
            assert!(row("directory").contains("UNREACHABLE"), "{}", row("directory"));
            assert!(row("last-applied").contains("applied1"), "{}", row("last-applied"));
            // The name arrived as text: the browser made no <i> element of it.
            assert!(
                dom.contains("&lt;i&gt;parked&lt;/i&gt;llll"),
                "the parked entry's name is not on the page:\n{dom}"
            );
            assert!(!dom.contains("<i>parked"), "markup from the IdP was rendered:\n{dom}");
            assert!(dom.contains("other (80)"), "{dom}");
            assert!(dom.contains("<svg id=\"chart-pending\""), "{dom}");
            assert!(dom.contains("<svg id=\"chart-applied\""), "{dom}");

            let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
            std::fs::create_dir_all(&artifacts).unwrap();
            let shot = artifacts.join("status.png");
            let _ = std::fs::remove_file(&shot);
            tokio::task::block_in_place(|| {
                browse(
                    &browser,
                    &profile,
                    &[&format!("--screenshot={}", shot.display())],
                    &url,
                )
            });
            let png = std::fs::read(&shot).expect("the screenshot was written");
            assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
            eprintln!("status page screenshot: {}", shot.display());
        }
    }

    // With the daemon stopped, the command reads the store.
    h.stop_daemon().await;
    let (ok, out, err) =
        tokio::task::block_in_place(|| cli(&["status", "--json", "--config", &config]));
    assert!(ok, "{err}");
    let c: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(c["daemon_running"], false);
    assert_eq!(c["directory"]["state"], "unknown");
    assert_eq!(
        (&c["pending"], &c["parked"]),
        (&json!(3), &json!(1)),
        "{out}"
    );
    assert_eq!(c["last_applied"]["name"], "applied1", "{out}");
    assert!(c["tokens"].is_null(), "{out}");
}

/// `journal replay` and `journal compact` show their progress; not on a
/// terminal (as here) as plain lines on stderr, ending with the whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_commands_print_progress_lines_when_not_on_a_terminal() {
    let mut h = Harness::start().await;
    for i in 0..30 {
        let r = h
            .send("POST", "/Users", Some(user(&format!("progress{i}"))))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    h.settle().await;
    let config = h.config_path();
    // Through the socket: replay waits while the writer applies them again.
    let (ok, out, err) = tokio::task::block_in_place(|| {
        cli(&["journal", "--config", &config, "replay", "--from", "1"])
    });
    assert!(ok, "{err}");
    assert!(out.contains("30 entries queued"), "{out}");
    assert!(
        err.contains("applying the replayed entries: 30/30 (100%)"),
        "{err}"
    );
    assert_eq!(h.daemon().store.pending_count(), 0);
    let (ok, out, err) =
        tokio::task::block_in_place(|| cli(&["journal", "--config", &config, "compact"]));
    assert!(ok, "{err}");
    assert!(out.contains("kept 30"), "{out}");
    assert!(
        err.contains("compacting the journal: 60/60 (100%)"),
        "{err}"
    );
    // The store opened by the command itself.
    h.stop_daemon().await;
    let (ok, _, err) =
        tokio::task::block_in_place(|| cli(&["journal", "--config", &config, "compact"]));
    assert!(ok, "{err}");
    assert!(
        err.contains("compacting the journal: 60/60 (100%)"),
        "{err}"
    );
}
