//! A dead writer is loud: a lane that panics (injected through the test
//! hook) makes `/readyz` answer 503 and `scim2ldap_writer_running` 0, and
//! the real binary exit non-zero; what was acknowledged before is applied
//! after the restart.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use scim2ldap::daemon::TestHooks;

use crate::harness::{get_text, Harness};

fn user(name: &str) -> Value {
    json!({"userName": name, "name": {"givenName": "G", "familyName": "F"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_panic_makes_readyz_503_and_the_metric_say_so() {
    let mut h = Harness::start().await;
    h.stop_daemon().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = scim2ldap::daemon::start_with(
        &h.config(),
        listener,
        TestHooks {
            panic_in_lane: true,
        },
    )
    .await
    .expect("daemon starts");
    let addr = running.addr;
    let ops = running.ops_addr.expect("the operational listener");
    h.base = format!("http://{addr}/scim/v2");
    h.daemon = Some(running);
    assert_eq!(get_text(&format!("http://{ops}/readyz")).await.0, 200);
    let metrics = get_text(&format!("http://{ops}/metrics")).await.1;
    assert!(
        metrics.contains("\nscim2ldap_writer_running 1\n"),
        "{metrics}"
    );

    // Acknowledged (durable in the journal); its lane panics on it.
    let r = h.send("POST", "/Users", Some(user("survivor"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();

    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = loop {
        let ready = get_text(&format!("http://{ops}/readyz")).await;
        if ready.0 == 503 || Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert!(ready.1.contains("the writer stopped"), "{}", ready.1);
    assert!(ready.1.contains("panicked"), "{}", ready.1);
    assert!(ready.1.contains("exiting"), "{}", ready.1);
    let metrics = get_text(&format!("http://{ops}/metrics")).await.1;
    assert!(
        metrics.contains("\nscim2ldap_writer_running 0\n"),
        "{metrics}"
    );
    let why = h.daemon().failure().expect("the daemon knows it must exit");
    assert!(why.contains("injected lane panic"), "{why}");

    // Shutdown does not hang on the dead writer.
    let d = h.daemon.take().unwrap();
    tokio::time::timeout(Duration::from_secs(20), d.shutdown())
        .await
        .expect("shutdown finishes");

    // After the restart the acknowledged write reaches the directory.
    h.start_daemon().await;
    h.settle().await;
    let entry = h
        .ldap_get(&format!("uid=survivor,{}", h.slapd.people_dn()))
        .await;
    assert!(entry.is_some(), "user {id} applied after the restart");
}

/// Kills the process if the test fails before it exits.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_panic_makes_the_binary_exit_non_zero() {
    let mut h = Harness::start().await;
    h.stop_daemon().await;
    let port = crate::harness::config_on_a_free_port(&h);
    let log = h.dir.join("daemon.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_scim2ldap"))
            .args(["serve", "--config"])
            .arg(h.dir.join("config.toml"))
            .env("SCIM2LDAP_LOG", "info")
            .env(TestHooks::PANIC_LANE_ENV, "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not listen");
        assert!(child.0.try_wait().unwrap().is_none(), "the daemon exited");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    h.base = format!("http://127.0.0.1:{port}/scim/v2");
    let r = h.send("POST", "/Users", Some(user("trigger"))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not exit after its lane panicked:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("injected lane panic"), "{text}");
    assert!(text.contains("the service manager restarts"), "{text}");
}
