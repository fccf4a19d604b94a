//! The `scim2ldap` command: parses the command line, sets up logging and
//! calls into the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "scim2ldap",
    version,
    about = "Provision users and groups from Entra ID, Okta or any SCIM 2.0 client into an LDAP directory",
    long_about = "Provision users and groups from Entra ID, Okta or any SCIM 2.0 client into an LDAP \
directory. `scim2ldap serve` is a SCIM 2.0 server: every accepted change is written to an \
on-disk journal, then applied to the directory by a background writer, following a TOML \
mapping. Run it as the systemd service scim2ldap.service; `scim2ldap check` tests a \
configuration against the directory before it is started.",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The end of `--help` and the man page's last section.
const AFTER_HELP: &str = "\
Files: /etc/scim2ldap/config.toml (the configuration; every key is described in \
/usr/share/doc/scim2ldap/config.example.toml), the mapping it names (presets in \
/usr/share/scim2ldap/mappings), /etc/scim2ldap/tokens.toml (token hashes, re-read on \
reload), /etc/scim2ldap/tls (the HTTPS certificate and key, re-read on reload), \
/var/lib/scim2ldap (the store and journal).

Signals: SIGHUP (systemctl reload scim2ldap) re-reads the mapping, the tokens and the \
TLS certificate; SIGTERM stops after in-flight requests.

Guides: /usr/share/doc/scim2ldap (README.md, entra.md, okta.md).";

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
    /// Write the man pages (scim2ldap.1 and one per command) into DIR;
    /// used when packaging.
    #[command(hide = true)]
    GenerateMan {
        /// The folder to write into (must exist).
        dir: PathBuf,
    },
    /// Print the completion script for SHELL; used when packaging.
    #[command(hide = true)]
    GenerateCompletions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
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
        Command::GenerateMan { dir } => {
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            Ok(())
        }
        Command::GenerateCompletions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "scim2ldap",
                &mut std::io::stdout(),
            );
            Ok(())
        }
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
    println!(
        "Entra ID and Okta need an HTTPS URL they can reach: see docs/entra.md and docs/okta.md.\n"
    );
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
                // What this reload reads, said before the swap so that the
                // log names exactly the files that were read.
                let read = ReloadReads::of(&path);
                match running.reload(&path) {
                    Ok(()) => {
                        read.log();
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
            notifier.stopping("draining requests and the writer");
            running.shutdown().await;
        }
        Some(why) => {
            notifier.stopping(&format!("exiting: {why}"));
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

/// The files a reload reads, to log exactly what was re-read. A file under
/// `$CREDENTIALS_DIRECTORY` is the copy systemd made when the service
/// started (`LoadCredential=`): reading it again sees no change, so it is
/// named as such and never reported as reloaded.
struct ReloadReads {
    mapping: Option<PathBuf>,
    tokens: Option<usize>,
    tokens_file: Option<PathBuf>,
    tls: Option<(PathBuf, PathBuf)>,
    credentials: Option<PathBuf>,
}

impl ReloadReads {
    fn of(path: &std::path::Path) -> ReloadReads {
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let cfg = scim2ldap::config::Config::load(path).ok();
        // `tokens_file` is not kept in the loaded config: read the key.
        let tokens_file = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("tokens_file")?.as_str().map(str::to_string))
            .map(|f| match (f.strip_prefix("credential:"), &credentials) {
                (Some(name), Some(dir)) => dir.join(name),
                (Some(_), None) => PathBuf::from(f),
                (None, _) => path.parent().unwrap_or(std::path::Path::new(".")).join(f),
            });
        ReloadReads {
            mapping: cfg.as_ref().map(|c| c.mapping_file.clone()),
            tokens: cfg.as_ref().map(|c| c.tokens.len()),
            tokens_file,
            tls: cfg
                .as_ref()
                .and_then(|c| c.server.tls.as_ref())
                .map(|t| (t.cert.clone(), t.key.clone())),
            credentials,
        }
    }

    /// Whether `file` is a systemd credential (not refreshed on reload).
    fn frozen(&self, file: &std::path::Path) -> bool {
        self.credentials
            .as_ref()
            .is_some_and(|dir| file.starts_with(dir))
    }

    fn log(&self) {
        let show = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let mut frozen = Vec::new();
        if let Some(f) = self.tokens_file.as_ref().filter(|f| self.frozen(f)) {
            frozen.push(format!("tokens_file {}", f.display()));
        }
        if let Some((cert, key)) = &self.tls {
            for (what, f) in [("tls_cert", cert), ("tls_key", key)] {
                if self.frozen(f) {
                    frozen.push(format!("{what} {}", f.display()));
                }
            }
        }
        let tokens_fresh = self.tokens_file.as_ref().is_none_or(|f| !self.frozen(f));
        let tls_fresh = self
            .tls
            .as_ref()
            .is_some_and(|(c, k)| !self.frozen(c) && !self.frozen(k));
        let what = match (tokens_fresh, tls_fresh) {
            (true, true) => "reloaded the mapping, the tokens and the TLS certificate",
            (true, false) => "reloaded the mapping and the tokens",
            (false, true) => {
                "reloaded the mapping, the tokens in the config file and the TLS certificate"
            }
            (false, false) => "reloaded the mapping and the tokens in the config file",
        };
        tracing::info!(
            mapping = show(&self.mapping),
            tokens = self.tokens,
            tokens_file = show(&self.tokens_file),
            tls_cert = self.tls.as_ref().map(|t| t.0.display().to_string()),
            "{what}"
        );
        if !frozen.is_empty() {
            tracing::warn!(
                files = %frozen.join(", "),
                "not reloaded: these are systemd credentials, which systemd copies only when the service starts; \
                 restart to use new contents, or keep tokens in a plain file (/etc/scim2ldap/tokens.toml) and the \
                 certificate in /etc/scim2ldap/tls (see the unit file)"
            );
        }
    }
}
