#!/usr/bin/env bash
# remote_issuer.sh: proxied req/s of a gateway trusting another issuer through a JWKS *file*
# beside one trusting the same issuer by *URL* (`jwks_uri`), rounds interleaved (issue 11).
#
#   benches/remote_issuer.sh [-s SECS] [-r ROUNDS] [-c CONNS]
#
#   -s  seconds per measurement (default 5)       -r  rounds (default 3)
#   -c  connections (default 32)
#
# A third tokengate, the "central" issuer, holds the RS256 signing key and publishes its JWKS on
# its plain listener; the file gateway reads a copy of that JWKS from disk, the URL gateway
# fetches it (plain http is allowed to loopback). Both validate the same minted token with the
# verified-token cache on (`cached`) and off (`uncached`: every request verifies the signature
# with a key read through the remote set's atomic pointer). Goal: URL >= 0.97x file.
# TOKENGATE=path of the binary (default target/release/tokengate, built if missing).
set -euo pipefail

secs=5 rounds=3 conns=32
while getopts s:r:c:h o; do
  case $o in
    s) secs=$OPTARG ;; r) rounds=$OPTARG ;; c) conns=$OPTARG ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"

central_iss="https://central.bench"

# gateway NAME EXTRA_TOML: writes NAME/gateway.toml (1 worker, its own generated key, an echo
# route) with EXTRA appended, starts it; its plain port is in $plain.
gateway() {
  local name=$1 extra=$2 admin tls
  plain=$(free_port) admin=$(free_port) tls=$(free_port)
  mkdir -p "$work/$name"
  printf '%s\n' "[server]" "listen = \"127.0.0.1:$tls\"" "listen_plain = \"127.0.0.1:$plain\"" "workers = 1" \
    "[admin]" "listen = \"127.0.0.1:$admin\"" "[log]" "level = \"warn\"" "$extra" \
    "[[routes]]" "prefix = \"/\"" "upstream = \"echo\"" >"$work/$name/gateway.toml"
  start_gateway "$name" "$admin"
}

mkdir -p "$work/central/keys"
"$tg" keygen --alg RS256 --out "$work/central/keys/c1.pem" >/dev/null
gateway central "[tokens]
issuer = \"$central_iss\"
active_kid = \"c1\"
allow_plain_token_endpoint = true"
jwks_url="http://127.0.0.1:$plain/.well-known/jwks.json"
curl -fs "$jwks_url" >"$work/central.jwks.json"
token=$("$tg" mint --config "$work/central/gateway.toml" --sub bench --scope read --ttl 86400)
echo "$token" >"$work/token"

for cache in 10000 0; do
  gateway "file-$cache" "[tokens]
cache_size = $cache
[[issuers]]
issuer = \"$central_iss\"
jwks = \"$work/central.jwks.json\"
audiences = [\"api\"]
algorithms = [\"RS256\"]"
  eval "file_$cache=$plain"
  gateway "url-$cache" "[tokens]
cache_size = $cache
[[issuers]]
issuer = \"$central_iss\"
jwks_uri = \"$jwks_url\"
audiences = [\"api\"]
algorithms = [\"RS256\"]"
  eval "url_$cache=$plain"
done

declare -A results
for ((r = 1; r <= rounds; r++)); do
  for t in cached uncached; do
    cache=10000
    [ $t = uncached ] && cache=0
    for side in file url; do
      port_var="${side}_$cache"
      read -r rps bad < <(bench_rps -d "$secs" --warmup 1 -c "$conns" --url "http://127.0.0.1:${!port_var}/x" --token-file "$work/token")
      printf 'round %d  %-9s %-5s %8s req/s  (%s non-200 or errors)\n' "$r" "$t" "$side" "$rps" "$bad"
      if [ $side = file ]; then results[$t.a]+="$rps "; else results[$t.b]+="$rps "; fi
    done
  done
done

echo
median_table file url cached uncached
