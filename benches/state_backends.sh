#!/usr/bin/env bash
# state_backends.sh: the same gateway with `[state] backend = "redb"` and `backend = "redis"`,
# side by side on this machine, rounds interleaved (issue 10's benchmark).
#
#   benches/state_backends.sh [-s SECS] [-r ROUNDS] [-c CONNS] [-t REGEX]
#
#   -s  seconds per measurement (default 5)       -r  rounds; each target once per round (default 3)
#   -c  connections of the proxy and refresh targets (default 32)
#   -t  measure only the targets whose name matches this extended regex (e.g. 'proxy')
#
# Targets, each run against the redb instance and the redis instance in turn:
#   proxy     GET through the plain listener with one cached RS256 token (the denylist is in
#             memory on both backends: the goal is redis >= 0.97x redb)
#   cc        client-credentials tokens per second (argon2id of the client secret dominates)
#   password  password grants per second (argon2id of the client secret and the password, plus
#             the lockout reads and the new refresh family in the store), 4 connections
#   refresh   refresh grants per second: each connection logs in once, then rotates its own
#             refresh token (one store round trip: the Lua script on Redis, a write transaction
#             on redb)
# Redis is Debian's redis-server, started here on a free port with `appendonly yes` and
# `appendfsync everysec` (the README's recommendation). The load generator is `tokengate bench`
# (1 thread). TOKENGATE=path of the binary (default target/release/tokengate, built if missing).
# Prints one line per measurement and a table of medians with the redis/redb ratio.
set -euo pipefail

secs=5 rounds=3 conns=32 only=
while getopts s:r:c:t:h o; do
  case $o in
    s) secs=$OPTARG ;; r) rounds=$OPTARG ;; c) conns=$OPTARG ;; t) only=$OPTARG ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
for t in redis-server curl; do
  command -v $t >/dev/null || { echo "state_backends.sh: missing $t; apt-get install -y ${t/redis-server/redis-server}" >&2; exit 2; }
done

root=$(cd "$(dirname "$0")/.." && pwd)
tg=${TOKENGATE:-$root/target/release/tokengate}
if [ ! -x "$tg" ]; then
  (cd "$root" && cargo build --release --locked)
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rport=$(free_port)
mkdir -p "$work/redis"
redis-server --port "$rport" --bind 127.0.0.1 --dir "$work/redis" --save '' \
  --appendonly yes --appendfsync everysec >"$work/redis/log" 2>&1 &
pids+=($!)

# One RS256 signing key and one set of tables shared by both instances (as a fleet shares them).
mkdir -p "$work/keys"
"$tg" keygen --alg RS256 --out "$work/keys/k1.pem" >/dev/null
client_hash=$(printf '%s' bench-secret | "$tg" hash-secret)
user_hash=$(printf '%s' bench-password | "$tg" hash-secret)

# instance NAME STATE_TOML: writes NAME/gateway.toml, starts it, prints "plain_port admin_port".
instance() {
  local name=$1 state=$2 plain admin tls
  plain=$(free_port) admin=$(free_port) tls=$(free_port)
  mkdir -p "$work/$name"
  cat >"$work/$name/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$tls"
listen_plain = "127.0.0.1:$plain"
workers = 1
[admin]
listen = "127.0.0.1:$admin"
[tokens]
keys_dir = "$work/keys"
active_kid = "k1"
allow_plain_token_endpoint = true
[lockout]
per_ip_per_minute = 0
[state]
$state
[log]
level = "warn"
[[routes]]
prefix = "/"
upstream = "echo"
[[clients]]
id = "bench-app"
secret_hash = "$client_hash"
grants = ["client_credentials", "password", "refresh_token"]
scopes = ["read"]
[[users]]
username = "bench-user"
password_hash = "$user_hash"
scopes = ["read"]
EOF
  "$tg" serve --config "$work/$name/gateway.toml" >"$work/$name/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && { echo "$plain $admin"; return; }
    sleep 0.1
  done
  echo "state_backends.sh: $name did not become ready; its log:" >&2
  cat "$work/$name/log" >&2
  exit 1
}

for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
read -r redb_port _ < <(instance redb "backend = \"redb\"
path = \"$work/redb/state.redb\"")
read -r redis_port _ < <(instance redis "backend = \"redis\"
url = \"redis://127.0.0.1:$rport/0\"")

token=$("$tg" mint --config "$work/redb/gateway.toml" --sub bench --scope read --ttl 86400)
echo "$token" >"$work/token"

# run TARGET BACKEND PORT: prints the req/s of one measurement.
run() {
  local target=$1 port=$2 out
  local base=(--threads 1 -d "$secs" --warmup 1 --json)
  local ep="http://127.0.0.1:$port/oauth2/token" login=(--client-id bench-app --client-secret bench-secret)
  case $target in
    proxy) out=$("$tg" bench "${base[@]}" -c "$conns" --url "http://127.0.0.1:$port/x" --token-file "$work/token") ;;
    cc) out=$("$tg" bench "${base[@]}" -c 4 --issue "$ep" "${login[@]}") ;;
    password) out=$("$tg" bench "${base[@]}" -c 4 --issue "$ep" "${login[@]}" --username bench-user --password bench-password) ;;
    refresh) out=$("$tg" bench "${base[@]}" -c "$conns" --issue "$ep" "${login[@]}" --username bench-user --password bench-password --refresh) ;;
  esac
  python3 -c 'import json,sys
j = json.load(sys.stdin)
bad = sum(n for s, n in j["status"].items() if s != "200") + sum(j["errors"].values())
print("%.0f %d" % (j["rps"], bad))' <<<"$out"
}

declare -A results
targets=(proxy cc password refresh)
for ((r = 1; r <= rounds; r++)); do
  for t in "${targets[@]}"; do
    [ -n "$only" ] && ! [[ $t =~ $only ]] && continue
    for b in redb redis; do
      port=$redb_port
      [ $b = redis ] && port=$redis_port
      read -r rps bad < <(run "$t" "$port")
      printf 'round %d  %-9s %-6s %8s req/s  (%s non-200 or errors)\n' "$r" "$t" "$b" "$rps" "$bad"
      results[$t.$b]+="$rps "
    done
  done
done

echo
printf '%-9s %-24s %-24s %s\n' target "redb req/s (runs)" "redis req/s (runs)" "redis/redb (median)"
for t in "${targets[@]}"; do
  [ -z "${results[$t.redb]:-}" ] && continue
  python3 - "$t" "${results[$t.redb]}" "${results[$t.redis]}" <<'EOF'
import statistics, sys
t, a, b = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
fmt = lambda v: f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"
print(f"{t:<9} {fmt(a):<24} {fmt(b):<24} {statistics.median(b) / statistics.median(a):.2f}x")
EOF
done
