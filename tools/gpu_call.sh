#!/usr/bin/env bash
# One GPU call that does everything waiting for a GPU (benchmarks/README.md, "One GPU call").
#
# Passed to the device tool as the command `bash tools/gpu_call.sh`, with carry [".whl",
# "data"] and timeout_s 600. Here, before the call (both folders are git-ignored):
#   .whl/  keras==3.15.1, namex, optree wheels for CPython 3.12 manylinux x86-64 (the device
#          README's `pip download` line; the machine has JAX and PyTorch but no Keras)
#   data/cifar10-jpeg.tar.gz  a real copy of the CIFAR-10 JPEG archive (a link travels as a
#          link only): cp /work/shared/data/cifar10-jpeg.tar.gz data/
# It runs, in order of value, until GPU_CALL_BUDGET_S seconds after its start (default 560,
# packing included): benchmarks/gpu.py (E4 `tuned2`, Keras on JAX cold and warm against
# PyTorch), then the study's queue queue.txt (python -m squeeze_keras queue, into a scratch
# folder: runs already in results/ are skipped, GPU_CALL_CONCURRENCY at once, default 4),
# then tools/transport.py pack. Everything that comes back is flat in $OUT: gpu_call.log (this
# output), bench.tar.gz, runs-<k>.tar.gz, queue_state.json.
# Back here: python tools/transport.py unpack <files_at>/*.tar.gz --data <the archive>.
set -u -o pipefail
START=$(date +%s)
BUDGET=${GPU_CALL_BUDGET_S:-560}
CONCURRENCY=${GPU_CALL_CONCURRENCY:-4}
STAGES=${GPU_CALL_STAGES:-bench queue}
ARCHIVE=data/cifar10-jpeg.tar.gz
W=/tmp/gpu_call
: "${OUT:?OUT must name the folder that comes back}"
exec > >(tee -a "$OUT/gpu_call.log") 2>&1
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2
left() { echo $((START + BUDGET - $(date +%s))); }

if [ ! -f "$ARCHIVE" ] || [ -L "$ARCHIVE" ]; then
  echo "error: $ARCHIVE must be a real file in the checkout (carry data)"; exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || { echo "error: the carried wheels did not install"; exit 2; }
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv,noheader
python3 -c "import keras, jax; print('keras', keras.__version__, 'jax', jax.__version__, jax.devices())"
mkdir -p $W/bench_out

if [[ $STAGES == *bench* ]]; then
  echo "[call] benchmark at +$(( $(date +%s) - START )) s"
  timeout $(( $(left) - 60 )) python3 benchmarks/gpu.py --data $ARCHIVE --warm \
    --work $W/bench --out $W/bench_out || echo "[call] benchmark stopped (exit $?)"
  cp $W/bench/*.log $W/bench/pytorch.json $W/bench_out/ 2>/dev/null
  for side in keras keras_warm; do  # each Keras run's epochs, for the record
    for f in history.csv metrics.json; do cp $W/bench/$side/*/$f $W/bench_out/${side}_$f 2>/dev/null; done
  done
  python3 tools/transport.py pack-bench $W/bench_out --out "$OUT"
fi

if [[ $STAGES == *queue* ]]; then
  echo "[call] queue at +$(( $(date +%s) - START )) s, $(left) s left"
  # The benchmark's unpacked archive, decoded arrays and compiled programs serve the runs too.
  TMPDIR=$W/bench/tmp SQUEEZE_KERAS_CACHE=$W/bench/cache JAX_COMPILATION_CACHE_DIR=$W/bench/cache/jax \
    python3 -m squeeze_keras queue queue.txt --data $ARCHIVE --out $W/runs \
    --skip-finished-in results --concurrency "$CONCURRENCY" --deadline-at $((START + BUDGET)) \
    --reserve-s 40 --estimate-s 150 || echo "[call] queue stopped (exit $?)"
  python3 tools/transport.py pack queue.txt --runs $W/runs --skip-finished-in results --out "$OUT"
fi
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
echo "[call] done at +$(( $(date +%s) - START )) s"
ls -l "$OUT"
