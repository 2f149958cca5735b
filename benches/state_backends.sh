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
#   limited   `proxy` on a route with a per-caller quota that never triggers (100000/s, one
#             caller): counted in memory on redb, shared through Redis on redis with the default
#             allowance (a tenth of the burst per round trip)
#   lease10   the same with `lease = 10`: on redis, one request in ten waits on a round trip
# After the table, the cost of each quota on each backend: limited/proxy and lease10/proxy,
# computed per round (the rounds are interleaved), median and range; the goal is >= 0.97x.
# Redis is Debian's redis-server, started here on a free port with `appendonly yes` and
# `appendfsync everysec` (the recommendation of docs/fleet.md). The load generator is `tokengate bench`
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

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"

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

# instance NAME STATE_TOML: writes NAME/gateway.toml, starts it; its plain port is in $plain.
# (Not in a subshell: the gateway's pid must reach the cleanup.)
instance() {
  local name=$1 state=$2 admin tls
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
[[routes]]
prefix = "/limited"
upstream = "echo"
rate_limit = { key = "client_id", per_second = 100000, burst = 100000 }
[[routes]]
prefix = "/lease10"
upstream = "echo"
rate_limit = { key = "client_id", per_second = 100000, burst = 100000, lease = 10 }
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
  start_gateway "$name" "$admin"
}

for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
instance redb "backend = \"redb\"
path = \"$work/redb/state.redb\""
redb_port=$plain
instance redis "backend = \"redis\"
url = \"redis://127.0.0.1:$rport/0\""
redis_port=$plain

token=$("$tg" mint --config "$work/redb/gateway.toml" --sub bench --scope read --ttl 86400)
echo "$token" >"$work/token"

# run TARGET PORT: prints "req/s non-2xx+errors" of one measurement.
run() {
  local target=$1 port=$2
  local base=(-d "$secs" --warmup 1)
  local ep="http://127.0.0.1:$port/oauth2/token" login=(--client-id bench-app --client-secret bench-secret)
  case $target in
    proxy) bench_rps "${base[@]}" -c "$conns" --url "http://127.0.0.1:$port/x" --token-file "$work/token" ;;
    limited | lease10) bench_rps "${base[@]}" -c "$conns" --url "http://127.0.0.1:$port/$target/x" --token-file "$work/token" ;;
    cc) bench_rps "${base[@]}" -c 4 --issue "$ep" "${login[@]}" ;;
    password) bench_rps "${base[@]}" -c 4 --issue "$ep" "${login[@]}" --username bench-user --password bench-password ;;
    refresh) bench_rps "${base[@]}" -c "$conns" --issue "$ep" "${login[@]}" --username bench-user --password bench-password --refresh ;;
  esac
}

declare -A results
targets=(proxy limited lease10 cc password refresh)
for ((r = 1; r <= rounds; r++)); do
  for t in "${targets[@]}"; do
    [ -n "$only" ] && ! [[ $t =~ $only ]] && continue
    for b in redb redis; do
      port=$redb_port
      [ $b = redis ] && port=$redis_port
      read -r rps bad < <(run "$t" "$port")
      printf 'round %d  %-9s %-6s %8s req/s  (%s non-200 or errors)\n' "$r" "$t" "$b" "$rps" "$bad"
      if [ $b = redb ]; then results[$t.a]+="$rps "; else results[$t.b]+="$rps "; fi
    done
  done
done

echo
median_table redb redis "${targets[@]}"

# quota_cost LABEL SUFFIX: per-round ratios of the quota targets to `proxy` on one backend.
quota_cost() {
  [ -z "${results[proxy.$2]:-}" ] && return
  python3 - "$1" "${results[proxy.$2]}" "${results[limited.$2]:-}" "${results[lease10.$2]:-}" <<'PY'
import statistics, sys
label, proxy = sys.argv[1], [float(x) for x in sys.argv[2].split()]
for name, arg in (("limited", sys.argv[3]), ("lease10", sys.argv[4])):
    if not arg.strip():
        continue
    r = [q / p for q, p in zip((float(x) for x in arg.split()), proxy)]
    print(f"{label:<6} {name}/proxy: {statistics.median(r):.2f}x (rounds {' '.join(f'{x:.2f}' for x in r)})")
PY
}
echo
quota_cost redb a
quota_cost redis b
