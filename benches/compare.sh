#!/usr/bin/env bash
# compare.sh: requests/s of tokengate beside nginx (no auth) and HAProxy (jwt_verify) on this
# machine, same upstream, same tokens, same load generator, rounds interleaved.
#
#   benches/compare.sh [-s SECS] [-r ROUNDS] [-c CONNS] [-w WARMUP_SECS] [-u UNIQUE_TOKENS] [-p] [-t REGEX]
#
#   -s  seconds per measurement (default 10)      -r  rounds; each target once per round (default 3)
#   -c  connections (default 64)                  -w  unmeasured warm-up per target first (default 1)
#   -u  distinct tokens of the *-unique targets (default 2000)
#   -p  pin: servers on CPU 0, the load generator on CPU 1 (taskset; less noise on 2 cores)
#   -t  measure only the targets whose name matches this extended regex (e.g. 'nginx|tokengate-rs')
#
# Ports: PORT .. PORT+22 must be free.
# Environment: LOADGEN=wrk (default; wrk -t1 -cCONNS, as in the original HAProxy/nginx figures)
# or LOADGEN=tokengate (tokengate bench, 1 thread); TOKENGATE=path of the binary (default
# target/release/tokengate, built with cargo if missing); PORT=first of 20 ports (default 19000).
# TOKENGATE_B=path of a second tokengate build adds its own targets, named b-rs256, b-es256,
# b-rs256-unique, b-es256-unique and b-https-rs256, measured in the same rounds: an A/B of two builds.
# RATE=N measures latency instead of throughput: open loop at N req/s with `tokengate bench --rate`
# (LOADGEN=tokengate implied), and the table shows each target's p99 in microseconds (median of
# the rounds; lower is better), e.g. RATE=10000 for half of a ~20k req/s peak.
# WORKERS (default 1) and RUNTIME (work-stealing or per-core) set tokengate's [server] workers and
# runtime; RUNTIME_B sets B's runtime (default RUNTIME), to compare the two runtimes side by side.
#
# Targets, all on 127.0.0.1 and all answering the nginx upstream's "ok":
#   direct                 the upstream itself (PORT)
#   nginx-noauth           nginx proxy, no token check (PORT+1)
#   nginx-log              the same with its access log on, buffered (PORT+16)
#   haproxy-rs256/-es256   HAProxy jwt_verify (PORT+2, PORT+3); *-unique: a different token each request
#   tokengate-rs256/-es256 tokengate's plain listener, 1 worker (PORT+4), verified-token cache on
#   tokengate-*-unique     a second tokengate with tokens.cache_size = 0 (PORT+7): every request
#                          is validated in full, as HAProxy does (it has no cache)
#   tokengate-https-rs256  tokengate's HTTPS listener (PORT+5; TLS 1.3, keep-alive)
#   tokengate-log-rs256    a third tokengate with its access log on: level info, json, to a file
#                          (PORT+17; the others log at warn, like nginx-noauth and HAProxy)
#   tokengate-dpop-es256   the first tokengate with a DPoP-bound ES256 token (cached) and a fresh
#                          ES256 proof per request (RFC 9449; verified on every request, made before
#                          the run by `tokengate dpop-proof`, always sent with wrk): compare with
#                          tokengate-es256, the same token check as a bearer token
#   tokengate-rs256-limited the first tokengate's /limited route: tokengate-rs256 plus a per-caller
#                          rate_limit that never triggers (what checking a quota costs)
#   tokengate-rs256-limited-quiet  the same on /quiet, with `headers = false`: the quota checked,
#                          no RateLimit headers on the 200s (what the headers cost)
#   tokengate-rs256-group3 the first tokengate's /group route: the upstream as a group of three
#                          endpoints (127.0.0.1, .2, .3), round robin: compare with tokengate-rs256
#   tokengate-rs256-deep   the first tokengate (the 4 routes of peers/gateway.toml.in) on a deep path,
#                          /tenants/acme/svc199/orders/12345
#   tokengate-rs256-routes1000  the same path on a fourth tokengate with 1,000 routes (PORT+20):
#                          hosts exact and wildcard, methods, {tenant} templates; the path is
#                          served by a GET template route: compare with tokengate-rs256-deep
# Every target must answer 200 to its first token before anything is measured. The table shows the
# median req/s of the rounds, its ratio to nginx-noauth and to haproxy-rs256, and the non-2xx and
# socket-error totals. Installs nothing: it says what to apt-get install when a tool is missing.
set -euo pipefail

secs=10 rounds=3 conns=64 warm=1 unique=2000 pin=0 only=
while getopts s:r:c:w:u:pt:h o; do
  case $o in
    s) secs=$OPTARG ;; r) rounds=$OPTARG ;; c) conns=$OPTARG ;; w) warm=$OPTARG ;; u) unique=$OPTARG ;;
    p) pin=1 ;; t) only=$OPTARG ;; *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
loadgen=${LOADGEN:-wrk}
rate=${RATE:-}
[ -n "$rate" ] && loadgen=tokengate
case $loadgen in wrk | tokengate) ;; *) echo "compare.sh: LOADGEN must be wrk or tokengate" >&2; exit 2 ;; esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
peers=$here/peers
port=${PORT:-19000}
UP=$port NGX=$((port + 1)) HRS=$((port + 2)) HES=$((port + 3)) TGP=$((port + 4)) TGS=$((port + 5)) TGA=$((port + 6))

missing=()
for t in nginx haproxy openssl curl; do command -v $t >/dev/null || missing+=("$t"); done
[ "$loadgen" = wrk ] && { command -v wrk >/dev/null || missing+=(wrk); }
if [ ${#missing[@]} -gt 0 ]; then
  echo "compare.sh: missing ${missing[*]}; install with:" >&2
  echo "  apt-get install -y ${missing[*]}" >&2
  exit 2
fi
if [ "$pin" = 1 ] && ! command -v taskset >/dev/null; then
  echo "compare.sh: -p needs taskset (apt-get install -y util-linux)" >&2
  exit 2
fi

for p in $(seq "$port" $((port + 22))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "compare.sh: 127.0.0.1:$p is already in use; pick 20 free ports with PORT=..." >&2
    exit 2
  fi
done

tg=${TOKENGATE:-$root/target/release/tokengate}
if [ ! -x "$tg" ]; then
  echo "compare.sh: building $tg (cargo build --release)" >&2
  (cd "$root" && cargo build --release --bin tokengate >&2)
fi

dir=$(mktemp -d /tmp/tokengate-compare.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "compare.sh: kept $dir" >&2 || rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

server_cpu=() gen_cpu=()
[ "$pin" = 1 ] && server_cpu=(taskset -c 0) gen_cpu=(taskset -c 1)

# Keys (tokengate keygen), their public halves for HAProxy, and tokens minted by tokengate bench.
mkdir -p "$dir/keys" "$dir/tls" "$dir/nginx-tmp"
for alg in RS256 ES256; do
  k=$(tr 'A-Z' 'a-z' <<<"$alg")
  "$tg" keygen --alg "$alg" --out "$dir/keys/$k.pem"
  openssl pkey -in "$dir/keys/$k.pem" -pubout -out "$dir/$k.pub" 2>/dev/null
  mint=(bench --print-tokens --mint-key "$dir/keys/$k.pem" --iss https://peer.test --aud api --sub bench
    --scope read --ttl 86400)
  "$tg" "${mint[@]}" >"$dir/$alg.jwt"
  "$tg" "${mint[@]}" --distinct "$unique" >"$dir/$alg-many.jwt"
done
# DPoP-bound traffic: the client's key, its thumbprint, and an ES256 token bound to it (cnf.jkt).
# Proofs are made per measurement (dpop_proofs), each good for one request within 60 s.
"$tg" keygen --alg ES256 --out "$dir/dpop.pem"
jkt=$("$tg" dpop-proof --key "$dir/dpop.pem" --url http://127.0.0.1/ 2>&1 >/dev/null | sed -n 's/^jkt: //p')
"$tg" bench --print-tokens --mint-key "$dir/keys/es256.pem" --iss https://peer.test --aud api --sub bench \
  --scope read --ttl 86400 --jkt "$jkt" >"$dir/ES256-dpop.jwt"
# dpop_proofs URL COUNT -> the file of COUNT fresh proofs for GET URL with the bound token
dpop_proofs() {
  "$tg" dpop-proof --key "$dir/dpop.pem" --url "$1" --token "$(head -n1 "$dir/ES256-dpop.jwt")" --count "$2" \
    >"$dir/proofs.txt" 2>/dev/null
  echo "$dir/proofs.txt"
}

# The HTTPS listener's certificate (tokengate generates one only at its default location).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$dir/tls/gateway.key" -out "$dir/tls/gateway.crt" 2>/dev/null

# fill TEMPLATE OUT [TGP TGS TGA CACHE RUNTIME]: the placeholders of benches/peers/*.in
fill() {
  sed -e "s#@WORKERS@#${WORKERS:-1}#g" -e "s#@RUNTIME@#${7:-${RUNTIME:-work-stealing}}#g" -e "s#@DIR@#$dir#g" -e "s#@UP@#$UP#g" -e "s#@NGX@#$NGX#g" -e "s#@NGL@#$((port + 16))#g" -e "s#@HRS@#$HRS#g" -e "s#@HES@#$HES#g" \
    -e "s#@TGP@#${3:-}#g" -e "s#@TGS@#${4:-}#g" -e "s#@TGA@#${5:-}#g" -e "s#@CACHE@#${6:-}#g" "$1" >"$2"
}
fill "$peers/nginx.conf.in" "$dir/nginx.conf"
fill "$peers/haproxy.cfg.in" "$dir/haproxy.cfg"
fill "$peers/gateway.toml.in" "$dir/gateway.toml" "$TGP" "$TGS" "$TGA" 10000
fill "$peers/gateway.toml.in" "$dir/gateway-nocache.toml" $((port + 7)) $((port + 8)) $((port + 9)) 0
# The access-log target: the first config with every request logged (json, to a file).
fill "$peers/gateway.toml.in" "$dir/gateway-log.toml" $((port + 17)) $((port + 18)) $((port + 19)) 10000
sed -i -e "s#^level = \"warn\"#level = \"info\"\nfile = \"$dir/tokengate-access.log\"#" "$dir/gateway-log.toml"
grep -q '^file = ' "$dir/gateway-log.toml" || { echo "compare.sh: could not turn the access log on" >&2; exit 1; }

# The route-table target: the first config's 4 routes plus 996 (1,000 in all) that name hosts,
# methods and placeholders.
fill "$peers/gateway.toml.in" "$dir/gateway-routes.toml" $((port + 20)) $((port + 21)) $((port + 22)) 10000
for i in $(seq 0 198); do
  printf '\n[[routes]]\nprefix = "/tenants/{tenant}/svc%d/orders"\nmethods = ["GET", "HEAD"]\nupstream = "http://127.0.0.1:%d"\n' "$i" "$UP"
  printf '\n[[routes]]\nprefix = "/tenants/{tenant}/svc%d/orders"\nmethods = ["POST", "PUT", "DELETE"]\nupstream = "http://127.0.0.1:%d"\n' "$i" "$UP"
  printf '\n[[routes]]\nprefix = "/svc%d/admin"\nhosts = ["svc%d.example.com"]\nupstream = "http://127.0.0.1:%d"\n' "$i" "$i" "$UP"
  printf '\n[[routes]]\nprefix = "/"\nhosts = ["*.svc%d.example.com"]\nupstream = "http://127.0.0.1:%d"\n' "$i" "$UP"
  printf '\n[[routes]]\nprefix = "/svc%d"\nupstream = "http://127.0.0.1:%d"\n' "$i" "$UP"
done >>"$dir/gateway-routes.toml"
printf '\n[[routes]]\nprefix = "/tenants/{tenant}/svc199/orders"\nmethods = ["GET"]\nupstream = "http://127.0.0.1:%d"\n' "$UP" >>"$dir/gateway-routes.toml"
[ "$(grep -c '^\[\[routes\]\]' "$dir/gateway-routes.toml")" = 1000 ] || { echo "compare.sh: the route table is not 1,000 routes" >&2; exit 1; }

"$tg" check --config "$dir/gateway.toml" >/dev/null
"$tg" check --config "$dir/gateway-routes.toml" >/dev/null
"$tg" check --config "$dir/gateway-nocache.toml" >/dev/null
"$tg" check --config "$dir/gateway-log.toml" >/dev/null
tgb=${TOKENGATE_B:-}
if [ -n "$tgb" ]; then
  rb=${RUNTIME_B:-${RUNTIME:-work-stealing}}
  fill "$peers/gateway.toml.in" "$dir/gateway-b.toml" $((port + 10)) $((port + 11)) $((port + 12)) 10000 "$rb"
  fill "$peers/gateway.toml.in" "$dir/gateway-b-nocache.toml" $((port + 13)) $((port + 14)) $((port + 15)) 0 "$rb"
  "$tgb" check --config "$dir/gateway-b.toml" >/dev/null
fi
"${server_cpu[@]}" nginx -p "$dir/" -e "$dir/nginx-error.log" -c "$dir/nginx.conf" >"$dir/nginx.out" 2>&1 &
pids+=($!)
"${server_cpu[@]}" haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
pids+=($!)
"${server_cpu[@]}" "$tg" serve --config "$dir/gateway.toml" >"$dir/tokengate.log" 2>&1 &
pids+=($!)
"${server_cpu[@]}" "$tg" serve --config "$dir/gateway-nocache.toml" >"$dir/tokengate-nocache.log" 2>&1 &
pids+=($!)
"${server_cpu[@]}" "$tg" serve --config "$dir/gateway-log.toml" >"$dir/tokengate-log.log" 2>&1 &
pids+=($!)
"${server_cpu[@]}" "$tg" serve --config "$dir/gateway-routes.toml" >"$dir/tokengate-routes.log" 2>&1 &
pids+=($!)
if [ -n "$tgb" ]; then
  "${server_cpu[@]}" "$tgb" serve --config "$dir/gateway-b.toml" >"$dir/tokengate-b.log" 2>&1 &
  pids+=($!)
  "${server_cpu[@]}" "$tgb" serve --config "$dir/gateway-b-nocache.toml" >"$dir/tokengate-b-nocache.log" 2>&1 &
  pids+=($!)
fi

# name | url | token file ("" = none)
targets=(
  "direct|http://127.0.0.1:$UP/|"
  "nginx-noauth|http://127.0.0.1:$NGX/|"
  "nginx-log|http://127.0.0.1:$((port + 16))/|"
  "haproxy-rs256|http://127.0.0.1:$HRS/|$dir/RS256.jwt"
  "haproxy-es256|http://127.0.0.1:$HES/|$dir/ES256.jwt"
  "haproxy-rs256-unique|http://127.0.0.1:$HRS/|$dir/RS256-many.jwt"
  "haproxy-es256-unique|http://127.0.0.1:$HES/|$dir/ES256-many.jwt"
  "tokengate-rs256|http://127.0.0.1:$TGP/|$dir/RS256.jwt"
  "tokengate-es256|http://127.0.0.1:$TGP/|$dir/ES256.jwt"
  "tokengate-rs256-unique|http://127.0.0.1:$((port + 7))/|$dir/RS256-many.jwt"
  "tokengate-es256-unique|http://127.0.0.1:$((port + 7))/|$dir/ES256-many.jwt"
  "tokengate-https-rs256|https://127.0.0.1:$TGS/|$dir/RS256.jwt"
  "tokengate-log-rs256|http://127.0.0.1:$((port + 17))/|$dir/RS256.jwt"
  "tokengate-dpop-es256|http://127.0.0.1:$TGP/|$dir/ES256-dpop.jwt"
  "tokengate-rs256-limited|http://127.0.0.1:$TGP/limited|$dir/RS256.jwt"
  "tokengate-rs256-limited-quiet|http://127.0.0.1:$TGP/quiet|$dir/RS256.jwt"
  "tokengate-rs256-group3|http://127.0.0.1:$TGP/group|$dir/RS256.jwt"
  "tokengate-rs256-deep|http://127.0.0.1:$TGP/tenants/acme/svc199/orders/12345|$dir/RS256.jwt"
  "tokengate-rs256-routes1000|http://127.0.0.1:$((port + 20))/tenants/acme/svc199/orders/12345|$dir/RS256.jwt"
)
if [ -n "$tgb" ]; then
  targets+=(
    "b-rs256|http://127.0.0.1:$((port + 10))/|$dir/RS256.jwt"
    "b-es256|http://127.0.0.1:$((port + 10))/|$dir/ES256.jwt"
    "b-rs256-unique|http://127.0.0.1:$((port + 13))/|$dir/RS256-many.jwt"
    "b-es256-unique|http://127.0.0.1:$((port + 13))/|$dir/ES256-many.jwt"
    "b-https-rs256|https://127.0.0.1:$((port + 11))/|$dir/RS256.jwt"
  )
fi
if [ -n "$only" ]; then
  kept=()
  for t in "${targets[@]}"; do [[ ${t%%|*} =~ $only ]] && kept+=("$t"); done
  [ ${#kept[@]} -gt 0 ] || { echo "compare.sh: no target matches -t '$only'" >&2; exit 2; }
  targets=("${kept[@]}")
fi

status_of() { # url tokenfile [suffix] -> HTTP status of one request with the file's first token
  local h=()
  [ -n "$2" ] && h=(-H "Authorization: Bearer $(head -n1 "$2")${3:-}")
  if [[ $2 == *-dpop.jwt ]]; then # a DPoP-bound token: its scheme and a fresh proof
    h=(-H "Authorization: DPoP $(head -n1 "$2")${3:-}" -H "DPoP: $(head -n1 "$(dpop_proofs "$1" 1)")")
  fi
  curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "${h[@]}" "$1" || true
}
for t in "${targets[@]}"; do
  IFS='|' read -r name url tok <<<"$t"
  code=000
  for _ in $(seq 100); do
    code=$(status_of "$url" "$tok")
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  if [ "$code" != 200 ]; then
    echo "compare.sh: $name answered $code, not 200, at $url; logs:" >&2
    tail -n 5 "$dir"/*.log "$dir/nginx.out" >&2 || true
    exit 1
  fi
done
# A forged token must be refused by every checking target.
for t in "${targets[@]}"; do
  IFS='|' read -r name url tok <<<"$t"
  [ -n "$tok" ] || continue
  code=$(status_of "$url" "$tok" x)
  [ "$code" = 401 ] || { echo "compare.sh: $name let a bad signature through ($code)" >&2; exit 1; }
done

# measure SECS name url tokenfile -> "rps<TAB>non2xx<TAB>errors"
measure() {
  local d=$1 url=$3 tok=$4 out
  if [[ $tok == *-dpop.jwt ]]; then
    # wrk only (tokengate bench sends no proofs): enough fresh proofs for 25k req/s, made first.
    out=$(PROOFS=$(dpop_proofs "$url" $((25000 * d))) TOKEN=$(head -n1 "$tok") "${gen_cpu[@]}" wrk -t1 -c"$conns" \
      -d"${d}s" -s "$peers/dpop.lua" "$url")
    awk '/Requests\/sec/ { rps = $2 }
         /Non-2xx/ { bad = $NF }
         /Socket errors/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
         END { printf "%s\t%d\t%d\n", rps, bad, errs }' <<<"$out"
  elif [ "$loadgen" = wrk ]; then
    out=$(TOKENS=$tok "${gen_cpu[@]}" wrk -t1 -c"$conns" -d"${d}s" -s "$peers/tokens.lua" "$url")
    awk '/Requests\/sec/ { rps = $2 }
         /Non-2xx/ { bad = $NF }
         /Socket errors/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
         END { printf "%s\t%d\t%d\n", rps, bad, errs }' <<<"$out"
  else
    local src=(--no-token) tls=()
    [ -n "$tok" ] && src=(--token-file "$tok")
    [[ $url == https://* ]] && tls=(--insecure)
    local open=()
    [ -n "$rate" ] && open=(--rate "$rate")
    out=$("${gen_cpu[@]}" "$tg" bench --url "$url" "${src[@]}" "${tls[@]}" -c "$conns" -d "$d" --warmup 0 \
      --threads 1 "${open[@]}" --json) || true
    local errs value
    errs=$(grep -o '"errors":{[^}]*}' <<<"$out" | grep -o ':[0-9]*' | tr -d : | awk '{ s += $1 } END { print s + 0 }')
    if [ -n "$rate" ]; then
      value=$(grep -o '"p99":[0-9.e+-]*' <<<"$out" | head -n1 | cut -d: -f2)
    else
      value=$(grep -o '"rps":[0-9.e+-]*' <<<"$out" | cut -d: -f2)
    fi
    printf '%s\t%s\t%s\n' "$value" "$(grep -o '"non_2xx":[0-9]*' <<<"$out" | cut -d: -f2)" "$errs"
  fi
}

echo "compare.sh: $(nproc) cores, loadgen $loadgen, ${secs}s x $rounds rounds, $conns connections, pin=$pin" >&2
echo "  $(nginx -v 2>&1), $(haproxy -v | head -n1 | cut -d' ' -f1-3), $("$tg" --version)" >&2
if [ "$warm" != 0 ]; then
  for t in "${targets[@]}"; do
    IFS='|' read -r name url tok <<<"$t"
    measure "$warm" "$name" "$url" "$tok" >/dev/null
  done
fi
results=$dir/results.tsv
: >"$results"
for r in $(seq "$rounds"); do
  for t in "${targets[@]}"; do
    IFS='|' read -r name url tok <<<"$t"
    line=$(measure "$secs" "$name" "$url" "$tok")
    printf '%s\t%s\n' "$name" "$line" >>"$results"
    unit=req/s
    [ -n "$rate" ] && unit="us p99 at $rate req/s"
    echo "  round $r $name: $(awk '{ printf "%.0f", $1 }' <<<"$line") $unit" >&2
  done
done

awk -F'\t' -v what="${rate:+p99 us (median)}" '
  { if (!($1 in n)) order[++k] = $1; v[$1, ++n[$1]] = $2; bad[$1] += $3; err[$1] += $4 }
  function median(name,   i, j, t, a, m) {
    m = n[name]
    for (i = 1; i <= m; i++) a[i] = v[name, i] + 0
    for (i = 2; i <= m; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  function ratio(x, base) { return base > 0 ? sprintf("%.2f", x / base) : "-" }
  END {
    for (i = 1; i <= k; i++) med[order[i]] = median(order[i])
    printf "%-29s %14s %16s %17s %8s %8s\n", "target", what == "" ? "req/s (median)" : what, "vs nginx-noauth", "vs haproxy-rs256", "non-2xx", "errors"
    for (i = 1; i <= k; i++) {
      t = order[i]
      printf "%-29s %14.0f %16s %17s %8d %8d\n", t, med[t], ratio(med[t], med["nginx-noauth"]), ratio(med[t], med["haproxy-rs256"]), bad[t], err[t]
    }
  }' "$results"
