#!/usr/bin/env bash
# profile.sh: instructions per proxied request, counted by valgrind's callgrind. Unlike req/s,
# an instruction count is repeatable on a busy machine, so two builds can be compared at any time.
# User-space instructions only: the kernel's share of a request (about half of its CPU time on
# loopback) is not counted.
#
#   benches/profile.sh [-s SECS] [-a RS256|ES256] [-u] [-l] [-g] [-q local|shared|lease10] [-t RATIO] [-n] [-S] [-o OUT]
#
#   -s  seconds of measured load (default 10; callgrind slows the gateway ~50x)
#   -a  token algorithm (default RS256)     -u  a distinct token per request, verified-token cache off
#   -l  access log on (level info, json, to a file; its writer thread is counted too)
#   -g  the route's upstream is a group of three endpoints (127.0.0.1, .2 and .3, round robin)
#       instead of one URL: what balancing costs per request (RETRIES=N sets the group's
#       `retries`; RETRIES=0 shows what keeping a request for a retry costs)
#   -q  a per-caller quota on the route that never triggers (100000/s, one caller): `local`
#       counts in memory; `shared` counts on a Redis started here (redis-server) with the default
#       allowance, `lease10` with `lease = 10` (Redis's own instructions are not counted)
#   -t  tracing on, spans exported to a local OTLP sink (benches/otlp_sink.py) at this
#       sample_ratio (its export thread is counted too)
#   -n  profile nginx as a plain proxy (no token check, upstream keep-alive) instead, under the
#       same load: the per-request cost tokengate is measured against
#   -S  count system calls per request with `strace -c` (attached to every thread during the
#       measured load) instead of instructions
#   -o  keep the callgrind profile as OUT (read it with callgrind_annotate OUT)
#
# Starts an nginx upstream answering "ok" and tokengate (release build, plain listener, 1 worker)
# under callgrind on 127.0.0.1:PORT..PORT+3 (PORT=19800), warms up for 2 s uninstrumented, then
# counts while wrk (-t1 -c16) sends requests with the minted tokens, and prints the count per
# request. TOKENGATE=path profiles another build. Needs valgrind, nginx, wrk.
set -euo pipefail
secs=10 alg=RS256 unique=0 out= log=0 nginx=0 sys=0 quota= ratio= group=0
while getopts s:a:ulgq:t:nSo:h o; do
  case $o in s) secs=$OPTARG ;; a) alg=$OPTARG ;; u) unique=1 ;; l) log=1 ;; g) group=1 ;; q) quota=$OPTARG ;; t) ratio=$OPTARG ;; n) nginx=1 ;; S) sys=1 ;; o) out=$OPTARG ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;; esac
done
for t in valgrind callgrind_annotate callgrind_control nginx wrk; do
  command -v $t >/dev/null || { echo "profile.sh: needs $t (apt-get install -y valgrind nginx wrk)" >&2; exit 2; }
done
root=$(cd "$(dirname "$0")/.." && pwd)
tg=${TOKENGATE:-$root/target/release/tokengate}
[ -x "$tg" ] || (cd "$root" && cargo build --release --bin tokengate >&2)
port=${PORT:-19800}
dir=$(mktemp -d /tmp/tokengate-profile.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
mkdir -p "$dir/keys"
k=$(tr 'A-Z' 'a-z' <<<"$alg")
"$tg" keygen --alg "$alg" --out "$dir/keys/$k.pem"
mint=(bench --print-tokens --mint-key "$dir/keys/$k.pem" --iss https://profile.test --aud api --sub bench --ttl 86400)
if [ "$unique" = 1 ]; then "$tg" "${mint[@]}" --distinct 20000 >"$dir/tokens"; else "$tg" "${mint[@]}" >"$dir/tokens"; fi
# nginx_conf NAME TOP SERVERS: $dir/NAME.conf, one worker, no access log, with TOP directives
# and the SERVERS (upstream and server blocks) of its http block.
nginx_conf() {
  cat >"$dir/$1.conf" <<NGX
$2
worker_processes 1;
daemon off;
pid $dir/$1.pid;
error_log $dir/$1-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir;
  proxy_temp_path $dir;
  $3
}
NGX
}
nginx_conf nginx "" "server { listen 127.0.0.1:$port; listen 127.0.0.2:$port; listen 127.0.0.3:$port; location / { default_type text/plain; return 200 \"ok\n\"; } }"
state='path = ":memory:"' limit=
case $quota in
  '') ;;
  local | shared | lease10)
    lease=
    if [ "$quota" = lease10 ]; then lease=', lease = 10'; fi
    limit="rate_limit = { key = \"client_id\", per_second = 100000, burst = 100000$lease }"
    if [ "$quota" != local ]; then
      command -v redis-server >/dev/null || { echo "profile.sh: -q $quota needs redis-server" >&2; exit 2; }
      redis-server --port $((port + 4)) --bind 127.0.0.1 --save '' --appendonly no >"$dir/redis.log" 2>&1 &
      pids+=($!)
      state="backend = \"redis\"
url = \"redis://127.0.0.1:$((port + 4))/0\""
      for _ in $(seq 50); do redis-cli -p $((port + 4)) ping >/dev/null 2>&1 && break; sleep 0.1; done
    fi ;;
  *) echo "profile.sh: -q takes local, shared or lease10" >&2; exit 2 ;;
esac
tracing=
if [ -n "$ratio" ]; then
  python3 "$root/benches/otlp_sink.py" $((port + 5)) &
  pids+=($!)
  tracing="[tracing]
otlp_endpoint = \"http://127.0.0.1:$((port + 5))/v1/traces\"
sample_ratio = $ratio"
fi
cat >"$dir/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:$((port + 2))"
listen_plain = "127.0.0.1:$((port + 1))"
workers = 1
[admin]
listen = "127.0.0.1:$((port + 3))"
[tokens]
issuer = "https://profile.test"
audience = "api"
keys_dir = "$dir/keys"
active_kid = "$k"
cache_size = $([ "$unique" = 1 ] && echo 0 || echo 10000)
[state]
$state
[log]
$([ "$log" = 1 ] && printf 'level = "info"\nformat = "json"\nfile = "%s/access.log"' "$dir" || echo 'level = "warn"')
$tracing
$([ "$group" = 1 ] && printf '[[upstreams]]\nname = "three"\nendpoints = ["http://127.0.0.1:%s", "http://127.0.0.2:%s", "http://127.0.0.3:%s"]\n%s' $port $port $port "${RETRIES:+retries = $RETRIES}")
[[routes]]
prefix = "/"
upstream = "$([ "$group" = 1 ] && echo three || echo "http://127.0.0.1:$port")"
$limit
TOML
"$tg" check --config "$dir/gateway.toml" >/dev/null
nginx -p "$dir/" -c "$dir/nginx.conf" >/dev/null 2>&1 &
pids+=($!)
if [ "$nginx" = 1 ]; then
  # One process (no master), so callgrind or strace sees every request.
  nginx_conf proxy "master_process off;" "upstream origin { server 127.0.0.1:$port; keepalive 64; }
  server { listen 127.0.0.1:$((port + 1)); location / { proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://origin; } }"
  target=(nginx -p "$dir/" -c "$dir/proxy.conf")
else
  target=("$tg" serve --config "$dir/gateway.toml")
fi
if [ "$sys" = 1 ]; then
  command -v strace >/dev/null || { echo "profile.sh: -S needs strace (apt-get install -y strace)" >&2; exit 2; }
  "${target[@]}" 2>"$dir/target.log" &
else
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.out" "${target[@]}" 2>"$dir/valgrind.log" &
fi
vg=$!
pids+=($vg)
url=http://127.0.0.1:$((port + 1))/
for _ in $(seq 150); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(head -n1 "$dir/tokens")" "$url")" = 200 ] && break
  sleep 0.2
done
TOKENS=$dir/tokens wrk -t1 -c16 -d2s -s "$root/benches/peers/tokens.lua" "$url" >/dev/null
if [ "$sys" = 1 ]; then
  strace -c -f -o "$dir/strace.out" -p "$(ls /proc/"$vg"/task | paste -sd,)" 2>/dev/null &
  st=$!
  sleep 0.5
  load=$(TOKENS=$dir/tokens wrk -t1 -c16 -d"${secs}s" -s "$root/benches/peers/tokens.lua" "$url")
  kill -INT "$st"
  wait "$st" 2>/dev/null || true
  requests=$(awk '/requests in/ { print $1 }' <<<"$load")
  calls=$(awk '/^-+ -+/ { sep++ } sep == 2 && $NF == "total" { print $(NF-2) }' "$dir/strace.out")
  [ -z "$calls" ] && calls=$(awk '$NF == "total" { print $(NF-2) }' "$dir/strace.out")
  who=$([ "$nginx" = 1 ] && echo "nginx plain proxy" || echo "tokengate $alg")
  echo "profile.sh: $who: $requests requests, $calls system calls, $(awk -v c="$calls" -v r="$requests" 'BEGIN { printf "%.2f", c / r }') per request"
  sort -k4 -n -r "$dir/strace.out" | awk 'NF >= 5 && $NF != "total" && $NF != "syscall" { printf "  %-16s %s\n", $NF, $4 }' | head -8
  exit 0
fi
callgrind_control -i on "$vg" >/dev/null 2>&1
load=$(TOKENS=$dir/tokens wrk -t1 -c16 -d"${secs}s" -s "$root/benches/peers/tokens.lua" "$url")
callgrind_control -i off "$vg" >/dev/null 2>&1
callgrind_control -d "$vg" >/dev/null 2>&1
sleep 1
requests=$(awk '/requests in/ { print $1 }' <<<"$load")
non2xx=$(awk '/Non-2xx/ { print $NF }' <<<"$load")
profile=$(ls -S "$dir"/cg.out* | head -n1)
total=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
[ -n "$out" ] && cp "$profile" "$out"
[ "$nginx" = 1 ] && echo "profile.sh: nginx plain proxy (no token check): $requests requests, $total instructions, $((total / requests)) per request" && exit 0
echo "profile.sh: $alg, $([ "$unique" = 1 ] && echo 'a distinct token per request' || echo 'one token (cached)'), access log $([ "$log" = 1 ] && echo on || echo off), quota ${quota:-none}, tracing ${ratio:-off}: $requests requests${non2xx:+ ($non2xx non-2xx)}, $total instructions, $((total / requests)) per request"
