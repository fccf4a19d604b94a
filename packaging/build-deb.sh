#!/usr/bin/env bash
# Builds the Debian package with dpkg-deb: target/debian/scim2ldap_VERSION_ARCH.deb
# (the path is printed on stdout).
#
#   packaging/build-deb.sh     # cargo build --release, then dpkg-deb
#
# A plain script rather than `cargo deb`: it needs nothing but dpkg-deb,
# which every Debian and Ubuntu machine has, where cargo-deb would be one
# more tool to compile in CI. The package holds:
#
#   /usr/bin/scim2ldap                       built without the `dev` feature
#                                            (no throwaway-OpenLDAP command)
#   /usr/lib/systemd/system/scim2ldap.service   not enabled, not started
#   /usr/lib/sysusers.d/scim2ldap.conf       the scim2ldap system user
#   /usr/share/scim2ldap/mappings/*.toml     the mapping presets (examples/)
#   /usr/share/scim2ldap/certbot-deploy-hook
#   /usr/share/scim2ldap/monitoring/         Prometheus alert rules (and their
#                                            tests), the Grafana dashboard
#   /usr/share/doc/scim2ldap/                README.md, entra.md, okta.md,
#                                            config.example.toml, copyright
#   /usr/share/man/man1/scim2ldap*.1.gz      generated from the clap definitions
#   bash, zsh and fish completions           generated likewise
#
# postinst creates the user, /etc/scim2ldap (tls/ and credentials/) and
# /var/lib/scim2ldap; see packaging/debian/.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --release --no-default-features --bin scim2ldap >&2
bin=target/release/scim2ldap

version=$("$bin" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
name=scim2ldap_${version}_${arch}
root=target/debian/$name
rm -rf "$root"
mkdir -p "$root/DEBIAN"

install -D -m 0755 "$bin" "$root/usr/bin/scim2ldap"
strip --strip-unneeded "$root/usr/bin/scim2ldap"
install -D -m 0644 systemd/scim2ldap.service "$root/usr/lib/systemd/system/scim2ldap.service"
install -D -m 0644 packaging/sysusers.conf "$root/usr/lib/sysusers.d/scim2ldap.conf"
install -D -m 0755 packaging/certbot-deploy-hook "$root/usr/share/scim2ldap/certbot-deploy-hook"
install -d "$root/usr/share/scim2ldap/mappings"
install -m 0644 examples/*.toml "$root/usr/share/scim2ldap/mappings/"
install -d "$root/usr/share/scim2ldap/monitoring"
install -m 0644 monitoring/alerts.yml monitoring/alerts.test.yml monitoring/grafana-dashboard.json \
    "$root/usr/share/scim2ldap/monitoring/"
doc=$root/usr/share/doc/scim2ldap
install -d "$doc"
install -m 0644 README.md config.example.toml packaging/debian/copyright "$doc/"
install -m 0644 docs/*.md "$doc/"

man=$root/usr/share/man/man1
install -d "$man"
"$bin" generate-man "$man"
gzip -9n "$man"/*.1
"$bin" generate-completions bash | install -D -m 0644 /dev/stdin "$root/usr/share/bash-completion/completions/scim2ldap"
"$bin" generate-completions zsh | install -D -m 0644 /dev/stdin "$root/usr/share/zsh/vendor-completions/_scim2ldap"
"$bin" generate-completions fish | install -D -m 0644 /dev/stdin "$root/usr/share/fish/vendor_completions.d/scim2ldap.fish"

for s in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"
done

# The newest glibc symbol version the binary needs is its libc6 dependency.
glibc=$(objdump -T "$root/usr/bin/scim2ldap" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: scim2ldap
Version: $version
Architecture: $arch
Maintainer: scim2ldap maintainers <scim2ldap@example.invalid>
Installed-Size: $size
Depends: libc6 (>= $glibc), adduser | systemd
Recommends: systemd
Section: net
Priority: optional
Description: SCIM 2.0 provisioning from Entra ID or Okta into LDAP
 scim2ldap is a SCIM 2.0 server whose storage is an LDAP directory
 (OpenLDAP, 389 DS / FreeIPA, Active Directory): an identity provider
 (Microsoft Entra ID, Okta, any SCIM client) provisions users and groups,
 a TOML mapping says how they become entries, and every accepted change
 is journaled on disk before a background writer applies it.
 .
 The service is installed but neither enabled nor started; see
 /usr/share/doc/scim2ldap/README.md.
CONTROL

dpkg-deb --root-owner-group --build "$root" "target/debian/$name.deb" >&2
echo "target/debian/$name.deb"
