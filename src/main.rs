//! The `scim2ldap` command: parses the command line, sets up logging and
//! calls into the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "scim2ldap",
    version,
    about = "Provision users and groups from Entra ID, Okta or any SCIM 2.0 client into an LDAP directory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/scim2ldap/config.toml")]
        config: PathBuf,
        /// Accept and journal everything, but log each directory write as
        /// LDIF instead of sending it. Uses a separate store
        /// (STORE/dry-run), so nothing it accepts is ever delivered.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the config and the mapping, bind to the directory and compare
    /// the mapping with the directory's schema. Exit code 0 only when all
    /// is well.
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/scim2ldap/config.toml")]
        config: PathBuf,
    },
    /// Try it out: start a throwaway local OpenLDAP (kept in DIR) and serve
    /// against it in the foreground, printing the URL and a token.
    #[cfg(feature = "dev")]
    Dev {
        /// Where the directory's data, the store, the config and the token live.
        #[arg(long, default_value = "scim2ldap-dev")]
        dir: PathBuf,
        /// Address for the SCIM server.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Port for the throwaway OpenLDAP on 127.0.0.1.
        #[arg(long, default_value_t = 3890)]
        ldap_port: u16,
    },
    /// Look at and repair the journal: list, show, retry, skip, replay, stats.
    /// Works while the daemon runs (through its admin socket).
    Journal {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/scim2ldap/config.toml")]
        config: PathBuf,
        #[command(subcommand)]
        command: scim2ldap::journal_cmd::JournalCmd,
    },
    /// Adopt every existing entry under the mapping's user (and group)
    /// parent DN, so that the identity provider links them instead of
    /// creating duplicates. Nothing is written to the directory.
    Import {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/scim2ldap/config.toml")]
        config: PathBuf,
    },
    /// What the daemon is doing: directory up or down, pending and parked
    /// entries (with the directory's answer), the last entry applied, the
    /// last request of each identity provider. Reads the store when the
    /// daemon is stopped.
    Status {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/scim2ldap/config.toml")]
        config: PathBuf,
        /// One JSON document for scripts (shape in README, "Is it working?").
        #[arg(long)]
        json: bool,
    },
    /// Make a new bearer token and print it with the line to put in the config.
    Token {
        /// A name for the client that will use it (shown in logs).
        #[arg(long, default_value = "entra")]
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scim2ldap: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Token { name } => {
            let token = scim2ldap::token::generate().context("reading random bytes from the OS")?;
            let hash = scim2ldap::token::TokenHash::of(&token);
            println!(
                "Token (paste into the identity provider; it is shown only once):\n\n    {token}\n"
            );
            println!(
                "Add to the config file:\n\n[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"",
                hash.to_hex()
            );
            Ok(())
        }
        Command::Journal { config, command } => {
            Ok(scim2ldap::journal_cmd::run(&config, command.into())?)
        }
        Command::Status { config, json } => Ok(scim2ldap::journal_cmd::status(&config, json)?),
        Command::Import { config } => Ok(scim2ldap::journal_cmd::run(
            &config,
            scim2ldap::admin::Request::Import,
        )?),
        #[cfg(feature = "dev")]
        Command::Dev {
            dir,
            listen,
            ldap_port,
        } => {
            let config = dev_setup(&dir, &listen, ldap_port)?;
            let cfg = scim2ldap::config::Config::load(&config)?;
            scim2ldap::logging::init(&cfg.log.level, cfg.log.format).map_err(anyhow::Error::msg)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(cfg, config))
        }
        Command::Serve { config, dry_run } => {
            let mut cfg = scim2ldap::config::Config::load(&config)?;
            scim2ldap::logging::init(&cfg.log.level, cfg.log.format).map_err(anyhow::Error::msg)?;
            if dry_run {
                cfg.ldap.dry_run = true;
                cfg.store.path = cfg.store.path.join("dry-run");
                tracing::warn!(store = %cfg.store.path.display(), "dry run: directory writes are logged as LDIF, not sent");
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(cfg, config))
        }
        Command::Check { config } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(scim2ldap::check::run(&config));
            print!("{report}");
            if report.ok() {
                Ok(())
            } else {
                anyhow::bail!("{} problem(s) found", report.problems.len())
            }
        }
    }
}

/// Prepares `dir` for `scim2ldap dev`: a running throwaway slapd, the
/// example mapping, a token and a config. Returns the config's path. The
/// slapd handle is leaked on purpose: it lives as long as the process, and
/// its watchdog stops the server when the process exits.
#[cfg(feature = "dev")]
fn dev_setup(dir: &std::path::Path, listen: &str, ldap_port: u16) -> anyhow::Result<PathBuf> {
    use scim2ldap_slapd::{DaemonConfig, Slapd, SlapdOptions};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let slapd = Slapd::start_in(
        &dir.join("ldap"),
        // A plain slapd, like a production one: no refint or memberof
        // overlay, agreeing with the example mapping's `refint = false`
        // (scim2ldap rewrites and removes member values itself).
        SlapdOptions {
            port: Some(ldap_port),
            ..SlapdOptions::default()
        },
    )
    .context("starting the throwaway OpenLDAP (is another one running in this folder?)")?;
    let mapping = dir.join("mapping.toml");
    if !mapping.exists() {
        std::fs::write(&mapping, scim2ldap::mapping::EXAMPLE_OPENLDAP)?;
    }
    let token_file = dir.join("token");
    let token = match std::fs::read_to_string(&token_file) {
        Ok(t) => t.trim().to_string(),
        Err(_) => {
            let t = scim2ldap::token::generate()?;
            std::fs::write(&token_file, &t)?;
            t
        }
    };
    let token_sha256 = scim2ldap::token::TokenHash::of(&token).to_hex();
    let config = slapd.daemon_config(&DaemonConfig {
        comment: "Written by `scim2ldap dev`; see config.example.toml for every key.",
        listen,
        token_name: "dev",
        token_sha256: &token_sha256,
        ..Default::default()
    });
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config)?;
    println!(
        "scim2ldap dev: a throwaway OpenLDAP and scim2ldap, data in {}\n",
        dir.display()
    );
    println!("  SCIM base URL (Tenant URL):   http://{listen}/scim/v2");
    println!("  Bearer token (Secret Token):  {token}");
    println!(
        "  Directory:                    {} as {} / {}",
        slapd.uri(),
        slapd.bind_dn(),
        slapd.password()
    );
    println!("\nTry:  curl -H 'Authorization: Bearer {token}' http://{listen}/scim/v2/Users");
    println!("Entra ID and Okta need an HTTPS URL they can reach: see README.md, \"Connecting Entra ID\".\n");
    std::mem::forget(slapd);
    Ok(config_path)
}

async fn serve(cfg: scim2ldap::config::Config, path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let notifier = scim2ldap::notify::Notifier::from_env();
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", cfg.server.listen))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    // Test hooks (`SCIM2LDAP_TEST_PANIC_LANE`), read once; unset in use.
    let hooks = scim2ldap::daemon::TestHooks::from_env();
    let running = scim2ldap::daemon::start_with(&cfg, listener, hooks).await?;
    // Listening, the store open, the writer started: ready.
    notifier.ready(&format!("serving on {}", running.addr));
    let mut watchdog = notifier.spawn_watchdog();
    let mut failed = running.failed();
    let fatal = loop {
        tokio::select! {
            _ = term.recv() => break None,
            _ = tokio::signal::ctrl_c() => break None,
            // The writer stopped or the store cannot flush: stop feeding
            // the watchdog at once, and exit non-zero below.
            why = async { failed.wait_for(Option::is_some).await.ok().and_then(|w| w.clone()) } => {
                if let Some(w) = watchdog.take() {
                    w.abort();
                }
                break Some(why.unwrap_or_else(|| "the daemon failed".into()));
            }
            _ = hup.recv() => {
                notifier.reloading();
                match running.reload(&path) {
                    Ok(()) => {
                        tracing::info!("reloaded the mapping, the tokens and the TLS certificate");
                        notifier.reloaded(&format!("serving on {}; reloaded", running.addr));
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "reload refused; the previous mapping, tokens and certificate stay in force");
                        notifier.reloaded(&format!("serving on {}; last reload refused: see the log", running.addr));
                    }
                }
            }
        }
    };
    match &fatal {
        None => {
            tracing::info!("shutting down");
            notifier.stopping();
            running.shutdown().await;
        }
        Some(why) => {
            notifier.send(&format!("STOPPING=1\nSTATUS=exiting: {why}"));
            // In-flight requests finish; a shutdown that hangs all the same
            // must not keep a broken daemon alive.
            if tokio::time::timeout(std::time::Duration::from_secs(30), running.shutdown())
                .await
                .is_err()
            {
                tracing::error!("shutdown did not finish within 30 s; exiting anyway");
            }
        }
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    // A failure during shutdown (the writer's last entry hit a store
    // error) counts as well.
    let fatal = fatal.or_else(|| failed.borrow_and_update().clone());
    match fatal {
        None => Ok(()),
        Some(why) => {
            anyhow::bail!("{why}; exiting so that the service manager restarts the daemon (every acknowledged write is in the journal)")
        }
    }
}
