#!/usr/bin/env bash
# A throwaway Samba Active Directory DC (Debian packages samba,
# samba-ad-provision, samba-dsdb-modules, socat) with every file inside DIR,
# reachable on 127.0.0.1:PORT (LDAP) and 127.0.0.1:LDAPS_PORT (LDAPS).
# Called by the Rust fixture (crates/slapd/src/samba.rs), which writes this
# file into DIR first.
#
#   samba-ad.sh start DIR PORT LDAPS_PORT PASSWORD REALM DOMAIN -> prints samba's PID
#   samba-ad.sh stop DIR
#
# Samba's LDAP server binds the fixed ports 389/636; no option changes
# them. So samba runs in its own network namespace (`unshare -n`, needs
# root) on that namespace's private loopback, and socat relays carry the
# traffic: host 127.0.0.1:PORT -> DIR/run/ldap.sock -> namespace
# 127.0.0.1:389 (and the same for LDAPS). TLS ends at samba, with a
# throwaway CA (DIR/tls/ca.crt). Only `server services = ldap` runs (no
# smbd, KDC, DNS or RPC). Samba's default stays: simple binds only over
# TLS ("ldap server require strong auth"), as on a hardened AD. A changed
# password ends the old one at once ("old password allowed period = 0";
# Samba's default, like Windows', accepts it for another 60 minutes).
# Exit status 3: a port was taken (the fixture retries with another).
set -euo pipefail
alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [[ -n $s && $s != Z ]]; }
die() { echo "samba-ad.sh: $*" >&2; exit 1; }

killpid() { # file expected-comm
  local f=$1/run/$2.pid p
  [[ -s $f ]] || return 0
  p=$(cat "$f")
  if alive "$p" && [[ $(cat "/proc/$p/comm" 2>/dev/null) == "$3" ]]; then
    kill -TERM "$p" 2>/dev/null || true
  fi
}
stop() {
  local dir=$1 pid
  killpid "$dir" fwd-ldap socat; killpid "$dir" fwd-ldaps socat
  pid=$(cat "$dir/run/samba-root.pid" 2>/dev/null || true)
  if [[ -n $pid ]] && alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == samba ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do alive "$pid" || break; sleep 0.05; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  fi
  killpid "$dir" relay-ldap socat; killpid "$dir" relay-ldaps socat
  rm -f "$dir"/run/*.pid
}

if [[ ${1:-} == stop ]]; then stop "${2:?usage: samba-ad.sh stop DIR}"; exit 0; fi
[[ ${1:-} == start ]] || die "usage: samba-ad.sh start DIR PORT LDAPS_PORT PASSWORD REALM DOMAIN | stop DIR"
DIR=$2 PORT=$3 LDAPS_PORT=$4 ADMINPASS=$5 REALM=$6 DOMAIN=$7
DIR=$(cd "$DIR" && pwd)
RUN=$DIR/run
realm_lc=$(echo "$REALM" | tr 'A-Z' 'a-z')
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$PORT" "$LDAPS_PORT"; do
  port_busy "$p" && { echo "samba-ad.sh: 127.0.0.1:$p is already in use" >&2; exit 3; }
done

if [[ ! -f $DIR/etc/smb.conf ]]; then
  mkdir -p "$DIR/tls" "$DIR/log" "$RUN"
  (
    cd "$DIR/tls"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -days 3650 -subj "/CN=scim2ldap throwaway test CA" \
      -keyout ca.key -out ca.crt \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -new "${ec[@]}" -subj "/CN=dc1.$realm_lc" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,DNS:dc1.%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$realm_lc" > ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile ext.cnf -out server.crt 2>/dev/null
    chmod 600 ca.key server.key
  ) || die "could not create the TLS certificates"
  (cd "$DIR" && samba-tool domain provision --targetdir="$DIR" \
      --realm="$REALM" --domain="$DOMAIN" --server-role=dc --dns-backend=NONE \
      --adminpass="$ADMINPASS" --use-rfc2307 --host-name=dc1 \
      --option="interfaces = lo" --option="bind interfaces only = yes" \
      --option="server services = ldap" \
      --option="log file = $DIR/log/log.%m" --option="pid directory = $RUN" \
      --option="ncalrpc dir = $RUN/ncalrpc" \
      --option="winbindd socket directory = $RUN/winbindd" \
      --option="ntp signd socket directory = $RUN/ntp_signd" \
      --option="tls enabled = yes" --option="tls keyfile = $DIR/tls/server.key" \
      --option="tls certfile = $DIR/tls/server.crt" --option="tls cafile = $DIR/tls/ca.crt" \
  ) >"$DIR/provision.log" 2>&1 || { tail -n 30 "$DIR/provision.log" >&2; die "samba-tool domain provision failed (see $DIR/provision.log)"; }
  # provision leaves out options it has no use for: add this one by hand
  sed -i 's/^\[global\]$/[global]\n\told password allowed period = 0/' "$DIR/etc/smb.conf"
fi
mkdir -p "$RUN" "$DIR/log"
rm -f "$RUN"/ldap.sock "$RUN"/ldaps.sock "$RUN"/*.pid

setsid unshare -n bash -c '
  set -e
  ip link set lo up
  socat UNIX-LISTEN:"$1"/ldap.sock,fork,unlink-early,backlog=128 TCP:127.0.0.1:389 </dev/null >/dev/null 2>&1 &
  echo $! > "$1"/relay-ldap.pid
  socat UNIX-LISTEN:"$1"/ldaps.sock,fork,unlink-early,backlog=128 TCP:127.0.0.1:636 </dev/null >/dev/null 2>&1 &
  echo $! > "$1"/relay-ldaps.pid
  exec samba -F -s "$2" --debug-stdout -d 1
' _ "$RUN" "$DIR/etc/smb.conf" </dev/null >>"$DIR/log/samba.out" 2>&1 &
CHILD=$!
echo "$CHILD" > "$RUN/samba-root.pid"
socat TCP-LISTEN:"$PORT",bind=127.0.0.1,reuseaddr,fork,backlog=128 UNIX-CONNECT:"$RUN/ldap.sock" </dev/null >/dev/null 2>>"$DIR/log/socat.err" &
echo $! > "$RUN/fwd-ldap.pid"
socat TCP-LISTEN:"$LDAPS_PORT",bind=127.0.0.1,reuseaddr,fork,backlog=128 UNIX-CONNECT:"$RUN/ldaps.sock" </dev/null >/dev/null 2>>"$DIR/log/socat.err" &
echo $! > "$RUN/fwd-ldaps.pid"

deadline=$(( $(date +%s) + 60 ))
until LDAPTLS_CACERT=$DIR/tls/ca.crt ldapsearch -x -LLL -H "ldaps://127.0.0.1:$LDAPS_PORT" -b "" -s base -o nettimeout=2 defaultNamingContext 2>/dev/null | grep -q '^defaultNamingContext'; do
  if ! alive "$CHILD"; then
    tail -n 30 "$DIR/log/samba.out" >&2 || true
    stop "$DIR"
    die "samba exited during startup (see $DIR/log/samba.out)"
  fi
  for f in fwd-ldap fwd-ldaps; do
    if ! alive "$(cat "$RUN/$f.pid")"; then
      cat "$DIR/log/socat.err" >&2 || true
      stop "$DIR"
      grep -qi "address already in use" "$DIR/log/socat.err" && exit 3
      die "the socat relay $f exited during startup"
    fi
  done
  (( $(date +%s) < deadline )) || { stop "$DIR"; die "samba did not answer on 127.0.0.1:$LDAPS_PORT within 60 s"; }
  sleep 0.1
done

BASE_DN=$(echo "$realm_lc" | sed 's/^/DC=/; s/\./,DC=/g')
if [[ ! -f $DIR/.base-loaded ]]; then
  LDAPTLS_CACERT=$DIR/tls/ca.crt ldapadd -x -H "ldaps://127.0.0.1:$LDAPS_PORT" \
    -D "CN=Administrator,CN=Users,$BASE_DN" -w "$ADMINPASS" >/dev/null <<EOF
dn: OU=people,$BASE_DN
objectClass: organizationalUnit
ou: people

dn: OU=groups,$BASE_DN
objectClass: organizationalUnit
ou: groups
EOF
  touch "$DIR/.base-loaded"
fi
echo "$CHILD"
