#!/usr/bin/env bash
# Run every botkit benchmark; each script's tables go to the terminal and to
# benchmarks/out/<name>.txt, its progress (stderr) to benchmarks/out/<name>.log.
#
#   benchmarks/run_all.sh            # reuse KB databases cached in benchmarks/out/cache
#   benchmarks/run_all.sh --fresh    # delete that cache first (everything is embedded again)
#   benchmarks/run_all.sh --full     # scale.py also at 1,000,000 vectors (adds ~12 minutes on
#                                    # 2 cores: HNSW and IVF builds at 1M take minutes each)
#
# Without --full the set takes about 22 minutes on a busy 2-core machine with the cache
# warm, about 27 with --fresh (estimates from the per-script times in benchmarks/README.md).
# Data: ../shared/datasets (override with BOTKIT_BENCH_DATA=/path/to/datasets).
# Threads: unless OMP_WAIT_POLICY is already set, it is set to PASSIVE, because on a small
# shared machine spinning OpenMP workers (torch's and FAISS's pools) made single-query
# latency several times worse; benchmarks/threads.py measures the default beside it. Set
# BOTKIT_BENCH_OMP_DEFAULT=1 to run with no OMP_* variable at all.
set -u -o pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
if [ -z "${BOTKIT_BENCH_OMP_DEFAULT:-}" ] && [ -z "${OMP_WAIT_POLICY:-}" ]; then
  export OMP_WAIT_POLICY=PASSIVE
fi
OUT=benchmarks/out
CACHE=$OUT/cache
DATA=${BOTKIT_BENCH_DATA:-../shared/datasets}
mkdir -p "$OUT"
SIZES=10000,100000
for arg in "$@"; do
  case $arg in
    --fresh) rm -rf "$CACHE" ;;
    --full) SIZES=10000,100000,1000000 ;;
    *) echo "unknown option $arg (allowed: --fresh, --full)" >&2; exit 2 ;;
  esac
done

status=0
run() {
  local name=$1; shift
  echo ">>> $name: python benchmarks/$name.py $*" >&2
  local t0=$SECONDS
  if python "benchmarks/$name.py" --data "$DATA" --cache "$CACHE" "$@" \
       2> >(tee "$OUT/$name.log" >&2) | tee "$OUT/$name.txt"; then
    echo ">>> $name: done in $((SECONDS - t0))s" >&2
  else
    echo ">>> $name: FAILED (see $OUT/$name.log)" >&2
    status=1
  fi
}

run banking77          # builds the BANKING77 KB cache the later scripts reuse
run clinc150
run embedders
run scale --sizes "$SIZES"
run threads
exit $status
