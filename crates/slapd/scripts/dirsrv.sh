#!/usr/bin/env bash
# A throwaway 389 Directory Server (Debian package 389-ds-base) with every
# file inside DIR, listening on 127.0.0.1 only. Called by the Rust fixture
# (crates/slapd/src/dirsrv.rs), which writes this file into DIR first.
#
#   dirsrv.sh start DIR PORT PASSWORD SUFFIX   -> prints the ns-slapd PID
#   dirsrv.sh stop DIR                         -> SIGTERM, then SIGKILL
#
# Instance creation: lib389 only finds an instance at
# $PREFIX/etc/dirsrv/slapd-NAME/dse.ldif and takes its path defaults from
# $PREFIX/share/dirsrv/inf/defaults.inf, so dscreate runs with PREFIX=DIR
# and a copy of that file whose paths all point into DIR (tied to lib389
# 2.x). Before the server starts, dse.ldif is edited: listen on 127.0.0.1,
# the MemberOf plugin on (as FreeIPA runs it; it adds objectClass
# nsMemberOf). Referential integrity stays off, as dscreate leaves it: the
# daemon rewrites member values itself.
# Exit status 3: the port was taken (the fixture retries with another).
set -euo pipefail
alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [[ -n $s && $s != Z ]]; }
die() { echo "dirsrv.sh: $*" >&2; exit 1; }
INST=test

stop() {
  local dir=$1 pid
  pid=$(cat "$dir/run/slapd-$INST.pid" 2>/dev/null || cat "$dir/ns-slapd.pid" 2>/dev/null || true)
  [[ -n $pid ]] && alive "$pid" || return 0
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == ns-slapd ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do alive "$pid" || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}

if [[ ${1:-} == stop ]]; then stop "${2:?usage: dirsrv.sh stop DIR}"; exit 0; fi
[[ ${1:-} == start ]] || die "usage: dirsrv.sh start DIR PORT PASSWORD SUFFIX | stop DIR"
DIR=$2 PORT=$3 PASSWORD=$4 SUFFIX=$5
DIR=$(cd "$DIR" && pwd)
CONF=$DIR/etc/dirsrv/slapd-$INST
PIDFILE=$DIR/run/slapd-$INST.pid
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_busy "$PORT" && { echo "dirsrv.sh: 127.0.0.1:$PORT is already in use" >&2; exit 3; }

if [[ ! -f $CONF/dse.ldif ]]; then
  mkdir -p "$DIR/share/dirsrv/inf" "$DIR/etc/dirsrv" "$DIR/tmp"
  sed -e "s|^sysconf_dir = .*|sysconf_dir = $DIR/etc|" \
      -e "s|^initconfig_dir = .*|initconfig_dir = $DIR/etc/default|" \
      -e "s|^config_dir = .*|config_dir = $DIR/etc/dirsrv/slapd-{instance_name}|" \
      -e "s|^local_state_dir = .*|local_state_dir = $DIR/var|" \
      -e "s|^run_dir = .*|run_dir = $DIR/run|" \
      -e "s|^ldapi = .*|ldapi = $DIR/run/slapd-{instance_name}.socket|" \
      -e "s|^pid_file = .*|pid_file = $DIR/run/slapd-{instance_name}.pid|" \
      -e "s|^inst_dir = .*|inst_dir = $DIR/lib/dirsrv/slapd-{instance_name}|" \
      -e "s|^tmpfiles_d = .*|tmpfiles_d = $DIR/tmpfiles.d|" \
      -e "s|^with_systemd = .*|with_systemd = 0|" \
      -e "s|^user = .*|user = $(id -un)|" -e "s|^group = .*|group = $(id -gn)|" \
      -e "s|^schema_dir = .*|schema_dir = $DIR/etc/dirsrv/slapd-{instance_name}/schema|" \
      -e "s|^cert_dir = .*|cert_dir = $DIR/etc/dirsrv/slapd-{instance_name}|" \
      -e "s|/run/lock/dirsrv|$DIR/lock|" -e "s|/var/log/dirsrv|$DIR/log|g" \
      -e "s|/var/lib/dirsrv|$DIR/lib|g" -e "s|/dev/shm/|$DIR/shm/|" \
      -e "s|^tmp_dir = .*|tmp_dir = $DIR/tmp|" \
      /usr/share/dirsrv/inf/defaults.inf > "$DIR/share/dirsrv/inf/defaults.inf"
  cp -r /etc/dirsrv/schema /etc/dirsrv/config "$DIR/etc/dirsrv/"
  cat > "$DIR/ds.inf" <<EOF
[general]
config_version = 2
full_machine_name = localhost
selinux = False
systemd = False
start = False
strict_host_checking = False

[slapd]
instance_name = $INST
port = $PORT
self_sign_cert = False
root_dn = cn=Directory Manager
root_password = $PASSWORD
user = $(id -un)
group = $(id -gn)
db_lib = mdb

[backend-userroot]
suffix = $SUFFIX
create_suffix_entry = True
sample_entries = no
EOF
  (cd "$DIR" && PREFIX=$DIR dscreate -v from-file "$DIR/ds.inf") >"$DIR/dscreate.log" 2>&1 \
    || { tail -n 30 "$DIR/dscreate.log" >&2; die "dscreate failed (see $DIR/dscreate.log)"; }
  stop "$DIR" # dscreate may leave it running even with start = False
  /usr/bin/python3 - "$CONF/dse.ldif" <<'EOF'
import sys
path = sys.argv[1]
blocks = open(path).read().split("\n\n")
def put(lines, attr, value):
    low = attr.lower() + ":"
    return [l for l in lines if not l.lower().startswith(low)] + [f"{attr}: {value}"]
out = []
for b in blocks:
    lines = b.split("\n")
    head = lines[0].lower() if lines else ""
    if head == "dn: cn=config":
        lines = put(lines, "nsslapd-listenhost", "127.0.0.1")
        lines = put(lines, "nsslapd-security", "off")
    elif head == "dn: cn=memberof plugin,cn=plugins,cn=config":
        lines = put(lines, "nsslapd-pluginEnabled", "on")
        lines = put(lines, "memberOfAutoAddOC", "nsMemberOf")
    out.append("\n".join(lines))
open(path, "w").write("\n\n".join(out))
EOF
fi
sed -i "s/^nsslapd-port: .*/nsslapd-port: $PORT/" "$CONF/dse.ldif"
rm -f "$PIDFILE"
setsid /usr/sbin/ns-slapd -D "$CONF" -i "$PIDFILE" -d 0 </dev/null >>"$DIR/ns-slapd.out" 2>&1 &
CHILD=$!
echo "$CHILD" > "$DIR/ns-slapd.pid"
deadline=$(( $(date +%s) + 60 ))
until ldapsearch -x -LLL -H "ldap://127.0.0.1:$PORT" -b "" -s base -o nettimeout=1 namingContexts >/dev/null 2>&1; do
  if ! alive "$CHILD"; then
    tail -n 30 "$DIR/log/slapd-$INST/errors" >&2 || true
    grep -qi "address already in use\|Could not bind" "$DIR/log/slapd-$INST/errors" 2>/dev/null && exit 3
    die "ns-slapd exited during startup (see $DIR/log/slapd-$INST/errors)"
  fi
  (( $(date +%s) < deadline )) || { stop "$DIR"; die "389 DS did not answer on 127.0.0.1:$PORT within 60 s"; }
  sleep 0.05
done
if [[ ! -f $DIR/.base-loaded ]]; then
  ldapadd -x -H "ldap://127.0.0.1:$PORT" -D "cn=Directory Manager" -w "$PASSWORD" >/dev/null <<EOF
dn: ou=people,$SUFFIX
objectClass: top
objectClass: organizationalUnit
ou: people

dn: ou=groups,$SUFFIX
objectClass: top
objectClass: organizationalUnit
ou: groups
EOF
  touch "$DIR/.base-loaded"
fi
echo "$CHILD"
