//! One scenario suite, three real directory servers: every scenario below
//! runs against OpenLDAP (`examples/openldap.toml`), 389 DS
//! (`examples/389ds.toml`) and a Samba AD DC over LDAPS
//! (`examples/ad.toml`), and checks the directory's entries against what
//! that preset says.
//!
//! 389 DS and Samba are started once per test binary (the `shared()`
//! fixtures of `scim2ldap_slapd`) and each test works in an OU of its own,
//! with the preset's DNs moved under it; slapd is cheap enough to start
//! per test. A server that is not installed is skipped with a message
//! saying how to install it; with `SCIM2LDAP_REQUIRE_DIRECTORIES=1` (CI) a
//! missing server fails instead.
//!
//! The scenarios are written once (`scenarios.rs`); the `on_every_directory!`
//! macro makes one test per scenario and server, named
//! `directories::<server>::<scenario>`.

mod env;
mod scenarios;

/// One `#[tokio::test]` per scenario for each server; attributes after a
/// name (`#[ignore = "why"]`) apply to its Samba AD test only.
macro_rules! on_every_directory {
    ($($name:ident $(#[$samba:meta])*),* $(,)?) => {
        mod openldap {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::scenarios::$name(super::env::Server::OpenLdap).await
                }
            )*
        }
        mod dirsrv {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::scenarios::$name(super::env::Server::Dirsrv).await
                }
            )*
        }
        mod samba_ad {
            $(
                $(#[$samba])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::scenarios::$name(super::env::Server::SambaAd).await
                }
            )*
        }
    };
}

on_every_directory!(
    entra_user_lifecycle,
    okta_user_lifecycle,
    groups_and_members,
    rename_rewrites_member_values,
    adopts_an_existing_entry,
    password_set_and_changed,
    check_passes_with_the_preset,
);

/// Scenarios that only one server can show.
mod dirsrv_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn check_passes_with_the_freeipa_preset_on_389_ds() {
        super::scenarios::check_passes_with_the_freeipa_preset_on_389_ds(super::env::Server::Dirsrv)
            .await
    }
}

mod samba_ad_only {
    /// Samba AD's default policy refuses a one-character password.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_password_parks_and_keeps_the_old_one() {
        super::scenarios::a_refused_password_parks_and_keeps_the_old_one(
            super::env::Server::SambaAd,
        )
        .await
    }
}
