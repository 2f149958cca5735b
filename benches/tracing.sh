#!/usr/bin/env bash
# tracing.sh: proxied req/s with tracing off beside tracing on at 1% and 100% sampling, rounds
# interleaved, spans exported to a local OTLP/HTTP sink that accepts and drops (issue 14).
#
#   benches/tracing.sh [-s SECS] [-r ROUNDS] [-c CONNS] [-b BINARY]
#
#   -s  seconds per measurement (default 5)       -r  rounds (default 3)
#   -c  connections (default 32)
#   -b  also run BINARY, a tokengate built before tracing existed (e.g. from commit edff4a5),
#       with the `off` config: the whole-request cost of tracing when off
#
# Three gateways, one worker each, an echo route, the verified-token cache on: `off` (no
# [tracing]: only the traceparent sent upstream is made), `1%` and `100%` (otlp_endpoint set,
# sample_ratio 0.01 and 1.0; the default batch settings). The load carries no traceparent, so
# every request starts a new trace. Prints each round, then medians, ranges and on/off ratios,
# then each traced gateway's span counters (exported, dropped).
# TOKENGATE=path of the binary (default target/release/tokengate, built if missing).
set -euo pipefail

secs=5 rounds=3 conns=32 baseline=
while getopts s:r:c:b:h o; do
  case $o in
    s) secs=$OPTARG ;; r) rounds=$OPTARG ;; c) conns=$OPTARG ;; b) baseline=$OPTARG ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"

sink=$(free_port)
python3 "$root/benches/otlp_sink.py" "$sink" &
pids+=($!)

# gateway NAME EXTRA_TOML [BINARY]: writes NAME/gateway.toml with EXTRA appended, starts it (with
# BINARY, default $tg), mints its token into NAME/token; its plain port is in $plain, its admin
# port in $admin.
gateway() {
  local name=$1 extra=$2 bin=${3:-} tls
  plain=$(free_port) admin=$(free_port) tls=$(free_port)
  mkdir -p "$work/$name"
  printf '%s\n' "[server]" "listen = \"127.0.0.1:$tls\"" "listen_plain = \"127.0.0.1:$plain\"" "workers = 1" \
    "[admin]" "listen = \"127.0.0.1:$admin\"" "[log]" "level = \"warn\"" "$extra" \
    "[[routes]]" "prefix = \"/\"" "upstream = \"echo\"" >"$work/$name/gateway.toml"
  start_gateway "$name" "$admin" "$bin"
  "$tg" mint --config "$work/$name/gateway.toml" --sub bench --ttl 86400 >"$work/$name/token"
}

gateway off ""
off=$plain
gateway on1 "[tracing]
otlp_endpoint = \"http://127.0.0.1:$sink/v1/traces\"
sample_ratio = 0.01"
on1=$plain admin1=$admin
gateway on100 "[tracing]
otlp_endpoint = \"http://127.0.0.1:$sink/v1/traces\"
sample_ratio = 1.0"
on100=$plain admin100=$admin
sides=(off on1 on100)
if [ -n "$baseline" ]; then
  gateway base "" "$baseline"
  base=$plain
  sides=(base "${sides[@]}")
fi

declare -A results
for ((r = 1; r <= rounds; r++)); do
  for side in "${sides[@]}"; do
    read -r rps bad < <(bench_rps -d "$secs" --warmup 1 -c "$conns" --url "http://127.0.0.1:${!side}/x" --token-file "$work/$side/token")
    printf 'round %d  %-6s %8s req/s  (%s non-200 or errors)\n' "$r" "$side" "$rps" "$bad"
    case $side in
      base) results[off.a]+="$rps " ;;
      off) results[1%.a]+="$rps " results[100%.a]+="$rps " results[off.b]+="$rps " ;;
      on1) results[1%.b]+="$rps " ;;
      on100) results[100%.b]+="$rps " ;;
    esac
  done
done

echo
median_table off on 1% 100%
[ -n "$baseline" ] && { echo; median_table before-tracing off off; }
sleep 6 # one export interval: the last batches go out
for g in "1%:$admin1" "100%:$admin100"; do
  echo "${g%%:*} sampling: $(curl -fs "http://127.0.0.1:${g#*:}/metrics" | grep -E '^tokengate_trace_(spans_exported|spans_dropped|export_failures)_total' | tr '\n' ' ')"
done
