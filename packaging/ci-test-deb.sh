#!/usr/bin/env bash
# CI: builds the .deb, installs it on this machine, checks what it put in
# place, runs `scim2ldap --version` and `scim2ldap check` (the packaged
# binary, a packaged preset, the unit's file layout) against a throwaway
# OpenLDAP, and removes the package again. Needs root, dpkg and slapd, and
# target/debug/scim2ldap built with the default `dev` feature (scripts/test.sh
# builds it): its `dev` command starts the throwaway OpenLDAP.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "ci-test-deb: must run as root (dpkg -i)" >&2
    exit 1
fi
if dpkg -s scim2ldap >/dev/null 2>&1; then
    echo "ci-test-deb: a scim2ldap package is installed already; not touching it" >&2
    exit 1
fi

deb=$(packaging/build-deb.sh)
echo "ci-test-deb: built $deb ($(du -h "$deb" | cut -f1))"
target/debug/scim2ldap dev --help >/dev/null 2>&1 || cargo build --locked --bin scim2ldap

work=$(mktemp -d)
dev_pid=
cleanup() {
    if [ -n "$dev_pid" ]; then kill "$dev_pid" 2>/dev/null || true; wait "$dev_pid" 2>/dev/null || true; fi
    dpkg --purge scim2ldap >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

dpkg -i "$deb"

fail() { echo "ci-test-deb: $*" >&2; exit 1; }
/usr/bin/scim2ldap --version | grep -q '^scim2ldap ' || fail "--version"
for f in /usr/lib/systemd/system/scim2ldap.service /usr/lib/sysusers.d/scim2ldap.conf \
    /usr/share/scim2ldap/mappings/openldap.toml /usr/share/scim2ldap/certbot-deploy-hook \
    /usr/share/scim2ldap/monitoring/alerts.yml /usr/share/scim2ldap/monitoring/grafana-dashboard.json \
    /usr/share/doc/scim2ldap/README.md /usr/share/doc/scim2ldap/entra.md \
    /usr/share/doc/scim2ldap/okta.md /usr/share/doc/scim2ldap/config.example.toml \
    /usr/share/doc/scim2ldap/copyright /usr/share/man/man1/scim2ldap.1.gz \
    /usr/share/man/man1/scim2ldap-serve.1.gz /usr/share/bash-completion/completions/scim2ldap \
    /usr/share/zsh/vendor-completions/_scim2ldap /usr/share/fish/vendor_completions.d/scim2ldap.fish; do
    [ -f "$f" ] || fail "missing $f"
done
getent passwd scim2ldap >/dev/null || fail "no scim2ldap user"
[ "$(stat -c '%a %U %G' /etc/scim2ldap/tls)" = "750 root scim2ldap" ] || fail "/etc/scim2ldap/tls: $(stat -c '%a %U %G' /etc/scim2ldap/tls)"
[ "$(stat -c '%a %U' /etc/scim2ldap/credentials)" = "700 root" ] || fail "/etc/scim2ldap/credentials"
[ "$(stat -c '%a %U' /var/lib/scim2ldap)" = "700 scim2ldap" ] || fail "/var/lib/scim2ldap"
[ ! -e /etc/systemd/system/multi-user.target.wants/scim2ldap.service ] || fail "the service was enabled"
if command -v systemd-analyze >/dev/null; then
    # Also checks that Documentation=man:scim2ldap(1) resolves.
    systemd-analyze verify /usr/lib/systemd/system/scim2ldap.service
fi

# A throwaway OpenLDAP on a free loopback port (the `dev` command of the
# test build); only its directory is used.
ldap_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
http_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/scim2ldap dev --dir "$work/dev" --listen "127.0.0.1:$http_port" --ldap-port "$ldap_port" \
    >"$work/dev.log" 2>&1 &
dev_pid=$!
for _ in $(seq 100); do
    [ -f "$work/dev/config.toml" ] && break
    kill -0 "$dev_pid" 2>/dev/null || { cat "$work/dev.log" >&2; fail "the throwaway OpenLDAP did not start"; }
    sleep 0.2
done
[ -f "$work/dev/config.toml" ] || fail "no throwaway OpenLDAP after 20 s"

# The unit's layout in $work/etc: the preset from the package, tokens in a
# plain file, the bind password as a credential.
etc=$work/etc
mkdir -p "$etc/credentials"
password=$(sed -n 's/^bind_password = "\(.*\)"$/\1/p' "$work/dev/config.toml")
printf '%s' "$password" > "$etc/credentials/ldap-password"
sed -n '/^\[\[tokens\]\]/,$p' "$work/dev/config.toml" > "$etc/tokens.toml"
sed -e '/^\[\[tokens\]\]/,$d' \
    -e "s|^mapping = .*|mapping = \"/usr/share/scim2ldap/mappings/openldap.toml\"|" \
    -e "s|^bind_password = .*|bind_password_file = \"credential:ldap-password\"|" \
    -e "s|^path = \"state\"|path = \"$work/state\"|" \
    "$work/dev/config.toml" > "$etc/config.toml.body"
{ echo "tokens_file = \"$etc/tokens.toml\""; cat "$etc/config.toml.body"; } > "$etc/config.toml"
CREDENTIALS_DIRECTORY=$etc/credentials /usr/bin/scim2ldap check --config "$etc/config.toml"

kill "$dev_pid"; wait "$dev_pid" 2>/dev/null || true; dev_pid=
dpkg --purge scim2ldap
[ ! -e /usr/bin/scim2ldap ] || fail "/usr/bin/scim2ldap left after purge"
[ ! -e /usr/lib/systemd/system/scim2ldap.service ] || fail "the unit left after purge"
echo "ci-test-deb: ok"
