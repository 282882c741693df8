#!/usr/bin/env bash
# The GPU evidence run, on the lent GPU machine (see docs/gpu.md). Run from the repo root with
# the FlashInfer wheels in .whl/ (../shared/tools/gpu-wheels --dir .whl) and $OUT set:
#
#   scripts/device-evidence.sh smoke   # GPU tests + a tiny sweep (0.6.18.post1)
#   scripts/device-evidence.sh v6      # evidence sweeps for 0.6.18.post1 and torch-sdpa, GPU tests
#   scripts/device-evidence.sh v5      # evidence sweeps for 0.5.3, GPU tests
#   scripts/device-evidence.sh v7      # evidence sweeps and GPU tests for 0.7.2.post1 (see below)
#   scripts/device-evidence.sh r4      # GPU tests, decode sweep rerun with agreement, calibration
#   scripts/device-evidence.sh agree   # harness vs bench_gpu_time alternated in one process, GPU tests
#   scripts/device-evidence.sh burst   # per-replay trace of long bursts; 30 vs 10 samples per repeat
#   scripts/device-evidence.sh sustained  # long traces of heavy points; agreement with warmup_ms
#   scripts/device-evidence.sh clock   # SM clock probe traces (bursts, recovery); CUPTI GPU test
#   scripts/device-evidence.sh torchrep  # why torch-sdpa's repeats differ; then the GPU tests
#   scripts/device-evidence.sh v7tests # the GPU test module with 0.7.2.post1 (.whl/fi72.tar.xz)
#   scripts/device-evidence.sh backends  # every backend of every kernel, three versions
#   scripts/device-evidence.sh v6cupti # v6's sweeps and agreement with FlashInfer's CUPTI timer
#                                      # too (.whl/cupti_python-13.0.1-cp312-*.whl), then two
#                                      # runs with the clock floor at 0.995
#   scripts/device-evidence.sh v5cupti # the same for 0.5.3 (its graph timer has no cold L2)
#   scripts/device-evidence.sh backends-prefill  # the prefill/ragged/MLA backends, 0.6.18 and 0.5.3
#   scripts/device-evidence.sh cudnn   # the cuDNN prefill backends, 0.6.18 and 0.5.3
#   scripts/device-evidence.sh flushes # the harness by CUPTI with each cold-L2 method, and by
#                                      # graph replay; the cuDNN phase with the frontend; then
#                                      # the GPU tests (cupti-python, cudnn-frontend carried)
#   scripts/device-evidence.sh repeats # two runs with 3 repeats, two with 5 (CI overlap)
#   scripts/device-evidence.sh cudnn-decode  # cuDNN paged decode, 0.6.18 and 0.5.3, + tests
#   scripts/device-evidence.sh v5tests # the GPU test module with 0.5.3
#   scripts/device-evidence.sh v5rot   # 0.5.3's sweeps and agreement, with 0.6.18.post1's
#                                      # graph timer (rotation) timing 0.5.3's kernels too
#   scripts/device-evidence.sh s6v6    # the harness and FlashInfer's graph and CUPTI timers
#                                      # alternated in one process over the 53 units
#                                      # (0.6.18.post1), then two runs of its sweeps (CI)
#   scripts/device-evidence.sh tests   # the GPU test module with $VERSION (0.6.18.post1)
#   scripts/device-evidence.sh s6runs  # two runs of 0.6.18.post1's sweeps (no agreement)
#   scripts/device-evidence.sh s6v5    # the same alternation for 0.5.3, its kernels timed by
#                                      # 0.6.18.post1's graph timer
#   scripts/device-evidence.sh s6v7    # 0.7.2.post1 (.whl/fi72.tar.xz): the GPU test module
#                                      # with the cuDNN frontend, cuDNN decode, two sweep runs
#   scripts/device-evidence.sh s6v7agree  # s6v6's alternation for 0.7.2.post1
#
# Each step logs under $OUT; the script goes on when one fails. NO_TESTS=1 leaves out the GPU
# tests after the v6/v5 sweeps; SWEEP_S sets the sweep's limit in seconds.
set -uo pipefail
phase=${1:-smoke}
# Everything is written under a work folder and packed into $OUT/<phase>.tgz at the end (the
# device tool brings back at most 8 files).
FINAL=${OUT:-/tmp/kw-out}
OUT=/tmp/kw-work/$phase
mkdir -p "$OUT" "$FINAL"
trap 'tar -C "$OUT" -czf "$FINAL/$phase.tgz" . && cp "$OUT"/summary*.txt "$FINAL"/ 2>/dev/null' EXIT
export PYTHONUNBUFFERED=1
ENVS=/tmp/kw-envs
V6=0.6.18.post1
V5=0.5.3
V7=0.7.2.post1
WHEELHOUSE=.whl

{
  date -u; nvidia-smi; python3 -V
  python3 -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'
  python3 -m pip list 2>/dev/null | grep -i -E "cupti|nvidia-ml|torch |numpy"
} >"$OUT/machine.txt" 2>&1

install_fi() {  # version: FlashInfer into the machine's python (/tmp/fi-<version>), sharing
  # the version env's JIT cache; with cupti-python and the cuDNN frontend where carried
  [[ -d /tmp/fi-$1/flashinfer ]] || python3 -m pip install -q --no-index --no-deps --no-compile \
    --target /tmp/fi-$1 .whl/flashinfer_python-$1-*.whl .whl/apache_tvm_ffi-*.whl \
    $(ls .whl/cupti_python-*.whl .whl/nvidia_cudnn_frontend-*.whl 2>/dev/null) \
    >"$OUT/install-$1.log" 2>&1
  mkdir -p $ENVS/$1/jit
}

install_v6() { install_fi $V6; }

gpu_tests() {  # timeout [version (0.6.18.post1) [log name (pytest-gpu) [pytest -k expression]]]
  local v=${2:-$V6} log="$OUT/${3:-pytest-gpu}.log" k=${4:-}
  install_fi "$v"
  PYTHONPATH=/tmp/fi-$v python3 -c 'import flashinfer; print("flashinfer", flashinfer.__version__)' \
    >"$log" 2>&1
  FLASHINFER_WORKSPACE_BASE=$ENVS/$v/jit PYTHONPATH=/tmp/fi-$v:. timeout "$1" python3 -m pytest \
    --noconftest -p no:cacheprovider tests/test_gpu.py -q -rs ${k:+-k "$k"} 2>&1 | tee -a "$log" \
    | tail -30
}

interleaved() {  # timeout, version, then gpu_agreement_interleaved.py arguments: the 53 units
  local t=$1 v=$2; shift 2
  install_fi "$v"
  FLASHINFER_WORKSPACE_BASE=$ENVS/$v/jit PYTHONPATH=/tmp/fi-$v:. timeout "$t" \
    python3 bench/gpu_agreement_interleaved.py --suites decode,prefill,single --cupti \
    --out "$OUT/interleaved-$v.jsonl" "$@" 2>&1 | tee "$OUT/interleaved-$v.log" | tail -12
}

unpack_v7() {  # the 0.7.2.post1 wheel from .whl/fi72.tar.xz into /tmp/wh7 (see v7 below)
  WHEELHOUSE=/tmp/wh7
  mkdir -p /tmp/fi72 $WHEELHOUSE
  tar -C /tmp/fi72 -xJf .whl/fi72.tar.xz
  python3 -c 'import os, sys, zipfile
root, out = sys.argv[1:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
    for d, _, files in os.walk(root):
        for f in files:
            z.write(os.path.join(d, f), os.path.relpath(os.path.join(d, f), root))' \
    /tmp/fi72 $WHEELHOUSE/flashinfer_python-$V7-py3-none-any.whl >"$OUT/rezip.log" 2>&1
  cp .whl/apache_tvm_ffi-*.whl $(ls .whl/nvidia_cudnn_frontend-*.whl 2>/dev/null) $WHEELHOUSE/
  ls -la $WHEELHOUSE >>"$OUT/rezip.log"
}

v7_env() {  # 0.7.2.post1's version env ($ENVS/0.7.2.post1/venv), built from the unpacked wheel
  unpack_v7
  python3 -c "from kernelwatch.worker import envs; envs.build_env('$V7', '$ENVS', '$WHEELHOUSE')" \
    >"$OUT/env-build.log" 2>&1
}

with_cupti() {  # cupti-python (>= 13, matching the machine's CUDA 13.0 CUPTI) for every
  # python started from here, version envs included: bench_gpu_time's CUPTI timer
  [[ -d /tmp/cupti/cupti ]] || python3 -m pip install -q --no-index --no-deps --target \
    /tmp/cupti .whl/cupti_python-*cp312*.whl >"$OUT/install-cupti.log" 2>&1
  export PYTHONPATH=/tmp/cupti${PYTHONPATH:+:$PYTHONPATH}
}

floor_pair() {  # timeout, floor, then gpu_sweep.py arguments: two runs at another clock floor
  local t=$1 f=$2; shift 2
  timeout "$t" python3 bench/gpu_sweep.py --runs 2 --clock-floor "$f" --tag=-f${f#0.} \
    --envs-dir $ENVS --wheelhouse $WHEELHOUSE --out "$OUT" "$@" 2>&1 \
    | tee -a "$OUT/sweep-f${f#0.}.log" | grep -v "^\[" | tail -12
}

runs2() {  # timeout, then gpu_sweep.py arguments: two runs without agreement or torch
  local t=$1; shift
  timeout "$t" python3 bench/gpu_sweep.py --runs 2 --tag=-s6 --envs-dir $ENVS \
    --wheelhouse $WHEELHOUSE --out "$OUT" --no-torch "$@" 2>&1 | tee -a "$OUT/sweep.log" \
    | grep -v "^\[" | tail -8
}

sweep() {  # timeout, then gpu_sweep.py arguments
  local t=$1; shift
  timeout "$t" python3 bench/gpu_sweep.py --runs 2 --agreement --envs-dir $ENVS --wheelhouse $WHEELHOUSE \
    --out "$OUT" "$@" 2>&1 | tee -a "$OUT/sweep.log" | grep -v "^\[" | tail -75
}

case $phase in
  smoke) gpu_tests 420; sweep 150 --versions $V6 --suites tiny ;;
  v6) sweep ${SWEEP_S:-345} --versions $V6 --suites decode,prefill,single
      [[ -n ${NO_TESTS:-} ]] || gpu_tests 225 ;;
  v5) sweep ${SWEEP_S:-320} --versions $V5 --no-torch --suites decode,prefill,single
      [[ -n ${NO_TESTS:-} ]] || gpu_tests 250 ;;
  v7) # The 0.7.2.post1 wheel (62 MB) and this repo exceed what a call carries (64 MiB); its
      # unpacked contents xz-compress to 16 MB. Made here with:
      #   mkdir t && unzip -q -d t flashinfer_python-0.7.2.post1-py3-none-any.whl &&
      #   tar -C t -cf - . | xz -9 -T0 > .whl/fi72.tar.xz
      # and zipped back into the same wheel there (a wheel's RECORD hashes its files, not the zip).
      unpack_v7
      sweep ${SWEEP_S:-330} --versions $V7 --no-torch --suites decode,prefill,single
      # the GPU tests in the version's env (its python sees the machine's torch and pytest)
      [[ -n ${NO_TESTS:-} ]] || FLASHINFER_WORKSPACE_BASE=$ENVS/$V7/jit timeout 230 \
        $ENVS/$V7/venv/bin/python -m pytest --noconftest -p no:cacheprovider tests/test_gpu.py \
        -q -rs 2>&1 | tee "$OUT/pytest-gpu.log" | tail -30 ;;
  v7agree) # 0.7.2.post1 on a fresh machine: the warm-up test first (the eager estimate's
      # head start), then only the agreement runs (gpu_sweep --runs 0), whose rows
      # `gpu_sweep.py --report-only` joins to the v7 call's raw file
      unpack_v7
      python3 -c "from kernelwatch.worker import envs; envs.build_env('$V7', '$ENVS', '$WHEELHOUSE')"
      FLASHINFER_WORKSPACE_BASE=$ENVS/$V7/jit timeout 90 $ENVS/$V7/venv/bin/python -m pytest \
        --noconftest -p no:cacheprovider tests/test_gpu.py -q -rs -k warm_up 2>&1 \
        | tee "$OUT/pytest-gpu-warmup.log" | tail -20
      timeout ${SWEEP_S:-300} python3 bench/gpu_sweep.py --runs 0 --agreement --envs-dir $ENVS \
        --wheelhouse $WHEELHOUSE --out "$OUT" --versions $V7 --no-torch \
        --suites decode,prefill,single 2>&1 | tee -a "$OUT/sweep.log" | tail -5 ;;
  agree)
      install_v6
      FLASHINFER_WORKSPACE_BASE=$ENVS/$V6/jit PYTHONPATH=/tmp/fi-$V6:. timeout 240 \
        python3 bench/gpu_agreement_interleaved.py --repeats 3 --out "$OUT/interleaved.jsonl" \
        2>&1 | tee "$OUT/interleaved.log" | tail -20
      gpu_tests 330 ;;
  burst) # how a point's time moves over a burst (bench/gpu_burst_trace.py); then agreement
      # with repeats of 30 samples (FlashInfer's burst length) against the 10-sample default
      install_v6
      FLASHINFER_WORKSPACE_BASE=$ENVS/$V6/jit PYTHONPATH=/tmp/fi-$V6:. timeout 110 \
        python3 bench/gpu_burst_trace.py --out "$OUT/burst-trace.jsonl" 2>&1 \
        | tee "$OUT/burst-trace.log" | tail -80
      FLASHINFER_WORKSPACE_BASE=$ENVS/$V6/jit PYTHONPATH=/tmp/fi-$V6:. timeout 170 \
        python3 bench/gpu_agreement_interleaved.py --repeats 3 --samples-per-repeat 30 \
        --out "$OUT/interleaved-s30.jsonl" 2>&1 | tee "$OUT/interleaved-s30.log" | tail -20
      sweep 150 --versions $V6 --no-torch --suites decode --iterations 90 --tag=-i90
      sweep 140 --versions $V6 --no-torch --suites decode --tag=-i30 ;;
  sustained) # heavy points traced for 1.5 s; the interleaved and separate-process agreement
      # with the time-based warm-up of heavy calls (timing.warmup_ms, default 150)
      install_v6
      FLASHINFER_WORKSPACE_BASE=$ENVS/$V6/jit PYTHONPATH=/tmp/fi-$V6:. timeout 120 \
        python3 bench/gpu_burst_trace.py --shapes 256:2048,64:8192,16:32768,256:8192,1:2048 \
        --burst-ms 1500 --rebuilds 3 --out "$OUT/burst-trace-long.jsonl" 2>&1 \
        | tee "$OUT/burst-trace-long.log" | tail -60
      FLASHINFER_WORKSPACE_BASE=$ENVS/$V6/jit PYTHONPATH=/tmp/fi-$V6:. timeout 200 \
        python3 bench/gpu_agreement_interleaved.py --repeats 3 \
        --out "$OUT/interleaved-w150.jsonl" 2>&1 | tee "$OUT/interleaved-w150.log" | tail -20
      sweep 170 --versions $V6 --no-torch --suites decode --tag=-w150 ;;
  clock) # the clock probe over bursts and idle gaps (bench/gpu_clock_trace.py); the timing
      # test with CUPTI (cupti-python carried in .whl/)
      install_v6
      FLASHINFER_WORKSPACE_BASE=$ENVS/$V6/jit PYTHONPATH=/tmp/fi-$V6:. timeout 200 \
        python3 bench/gpu_clock_trace.py --out "$OUT/clock-trace.jsonl" 2>&1 \
        | tee "$OUT/clock-trace.log" | tail -80
      gpu_tests 150 $V6 pytest-cupti verified_cold_l2 ;;
  torchrep) # torch-sdpa's first repeat ran 8-10% faster than the others at some decode points
      # (bench/gpu_torch_repeats.py); then the whole GPU test module (0.6.18.post1)
      timeout ${SWEEP_S:-150} python3 bench/gpu_torch_repeats.py --profile \
        ${SHAPES:+--shapes $SHAPES} --out "$OUT/torch-repeats.jsonl" \
        2>&1 | tee "$OUT/torch-repeats.log" | tail -60
      [[ -n ${NO_TESTS:-} ]] || gpu_tests ${TESTS_S:-330} ;;
  v7tests) # the whole GPU test module in 0.7.2.post1's env
      v7_env
      FLASHINFER_WORKSPACE_BASE=$ENVS/$V7/jit timeout ${TESTS_S:-300} \
        $ENVS/$V7/venv/bin/python -m pytest --noconftest -p no:cacheprovider tests/test_gpu.py \
        -q -rs 2>&1 | tee "$OUT/pytest-gpu.log" | tail -30 ;;
  backends) # every offered backend of every kernel (bf16; fp8 KV for decode) through the
      # harness, per version (bench/gpu_backends.py): ok / unsupported with the library's message
      timeout 200 python3 bench/gpu_backends.py --versions $V6 --envs-dir $ENVS \
        --wheelhouse $WHEELHOUSE --out "$OUT" 2>&1 | tee "$OUT/backends-v6.log" | grep -v "^\["
      unpack_v7
      timeout 200 python3 bench/gpu_backends.py --versions $V7 --envs-dir $ENVS \
        --wheelhouse $WHEELHOUSE --out "$OUT" 2>&1 | tee "$OUT/backends-v7.log" | grep -v "^\["
      timeout 160 python3 bench/gpu_backends.py --versions $V5 --envs-dir $ENVS \
        --wheelhouse .whl --out "$OUT" 2>&1 | tee "$OUT/backends-v5.log" | grep -v "^\[" ;;
  v6cupti) # FlashInfer's CUPTI timer (flashinfer_benchmark.py's default) beside its graph
      # timer in the agreement; then the clock floor at 0.995 against the default 0.985
      with_cupti
      sweep ${SWEEP_S:-420} --versions $V6 --suites decode,prefill,single
      floor_pair ${FLOOR_S:-140} 0.995 --versions $V6 --no-torch --suites decode,prefill,single ;;
  v5cupti) # 0.5.3's sweeps and agreement with both of FlashInfer's timers; then the harness
      # itself timing by CUPTI, inputs rotated and then L2 flushed by a 2 x L2 write before
      # each call (FlashInfer's CUPTI convention), to tell what separates the two timers
      with_cupti
      sweep ${SWEEP_S:-330} --versions $V5 --no-torch --suites decode,prefill,single
      for how in rotate flush; do
        timeout ${CUPTI_S:-70} python3 bench/gpu_sweep.py --runs 1 --method cupti \
          --cold-l2-method $how --tag=-cupti-$how --envs-dir $ENVS --wheelhouse .whl \
          --out "$OUT" --versions $V6 --no-torch --suites decode,single 2>&1 \
          | tee -a "$OUT/sweep-cupti-$how.log" | grep -v "^\[" | tail -6
      done ;;
  backends-prefill) # the backends of the prefill, ragged and MLA kernels (the decode ones are
      # in the backends phase's output), 0.6.18.post1 then 0.5.3
      timeout ${B6_S:-330} python3 bench/gpu_backends.py --versions $V6 --envs-dir $ENVS \
        --wheelhouse $WHEELHOUSE --out "$OUT" --kernels single_prefill batch_prefill \
        batch_prefill_ragged mla_decode 2>&1 | tee "$OUT/backends-prefill-v6.log" | grep -v "^\["
      timeout ${B5_S:-200} python3 bench/gpu_backends.py --versions $V5 --envs-dir $ENVS \
        --wheelhouse $WHEELHOUSE --out "$OUT" --kernels single_prefill batch_prefill \
        batch_prefill_ragged mla_decode 2>&1 | tee "$OUT/backends-prefill-v5.log" | grep -v "^\[" ;;
  cudnn) # the cuDNN prefill backends after the adapter's fix (element offsets, lengths,
      # block table; HND paged cache), 0.6.18.post1 then 0.5.3
      for v in $V6 $V5; do
        timeout ${CUDNN_S:-130} python3 bench/gpu_backends.py --versions $v --envs-dir $ENVS \
          --wheelhouse $WHEELHOUSE --out "$OUT" --kernels batch_prefill batch_prefill_ragged \
          --backends cudnn 2>&1 | tee "$OUT/backends-cudnn-$v.log" | grep -v "^\["
      done ;;
  flushes) # what the flush adds to a CUPTI-timed call: 0.6.18.post1's decode and single
      # decode timed by CUPTI with inputs rotated, L2 flushed by a 2 x L2 write (FlashInfer's
      # CUPTI timer), flushed by a 2 x L2 read (no dirty lines), and by graph replay (the
      # default), one machine start; then cuDNN with its frontend; the GPU tests in what is left
      with_cupti
      end=$(( $(date +%s) + ${CALL_S:-560} ))
      for how in rotate flush flush_clean; do
        timeout ${CUPTI_S:-110} python3 bench/gpu_sweep.py --runs 1 --method cupti \
          --cold-l2-method $how --tag=-cupti-$how --envs-dir $ENVS --wheelhouse .whl \
          --out "$OUT" --versions $V6 --no-torch --suites decode,single 2>&1 \
          | tee -a "$OUT/sweep-cupti-$how.log" | grep -v "^\[" | tail -4
      done
      timeout 60 python3 bench/gpu_sweep.py --runs 1 --tag=-graph --envs-dir $ENVS \
        --wheelhouse .whl --out "$OUT" --versions $V6 --no-torch --suites decode,single 2>&1 \
        | tee -a "$OUT/sweep-graph.log" | grep -v "^\[" | tail -4
      for v in $V6 $V5; do
        timeout 70 python3 bench/gpu_backends.py --versions $v --envs-dir $ENVS \
          --wheelhouse $WHEELHOUSE --out "$OUT" --kernels batch_prefill batch_prefill_ragged \
          --backends cudnn 2>&1 | tee "$OUT/backends-cudnn-$v.log" | grep -v "^\["
      done
      gpu_tests $(( end - $(date +%s) )) ;;
  v5rot) # 0.5.3's graph timer has no cold L2: its kernels also timed by 0.6.18.post1's graph
      # timer (rotated inputs), beside its own two timers (cupti-python carried)
      with_cupti
      sweep ${SWEEP_S:-540} --versions $V5 --no-torch --suites decode,prefill,single \
        --timer-from .whl/flashinfer_python-$V6-py3-none-any.whl ;;
  repeats) # does the CI cover run-to-run shifts with more repeats? 0.6.18.post1, two runs
      # with the default 3 repeats of 10 samples, then two with 5 repeats of 10, one machine start
      for r in 3 5; do
        timeout ${SWEEP_S:-250} python3 bench/gpu_sweep.py --runs 2 --repeats $r \
          --iterations $(( 10 * r )) --tag=-r$r --envs-dir $ENVS --wheelhouse .whl --out "$OUT" \
          --versions $V6 --no-torch --suites decode,prefill,single 2>&1 \
          | tee -a "$OUT/sweep-r$r.log" | grep -v "^\[" | tail -8
      done ;;
  cudnn-decode) # cuDNN's paged decode, called directly, 0.6.18.post1 and 0.5.3 (the cuDNN
      # frontend carried); then the cuDNN GPU tests in both
      for v in $V6 $V5; do
        timeout 70 python3 bench/gpu_backends.py --versions $v --envs-dir $ENVS \
          --wheelhouse $WHEELHOUSE --out "$OUT" --kernels batch_decode --backends cudnn 2>&1 \
          | tee "$OUT/backends-cudnn-decode-$v.log" | grep -v "^\["
      done
      for v in $V6 $V5; do gpu_tests 60 $v pytest-cudnn-$v cudnn; done ;;
  v5tests) # the whole GPU test module with 0.5.3 (cupti-python and the cuDNN frontend carried)
      gpu_tests ${TESTS_S:-400} $V5 ;;
  tests) # the whole GPU test module with $VERSION (default 0.6.18.post1)
      gpu_tests ${TESTS_S:-400} ${VERSION:-$V6} pytest-gpu-${VERSION:-$V6} ;;
  s6v6) # sixth session: ours and FlashInfer's timers alternated in one process (same GPU
      # state and placement) over all 53 units; then two runs of the sweeps, for the CI
      interleaved ${AGREE_S:-330} $V6
      runs2 ${SWEEP_S:-170} --versions $V6 --suites decode,prefill,single ;;
  s6runs) # two runs of 0.6.18.post1's three sweeps on a fresh machine (the CI's overlap)
      runs2 ${SWEEP_S:-380} --versions $V6 --suites decode,prefill,single ;;
  s6v5) # the same alternation for 0.5.3: its own graph timer has no cold L2, so its kernels
      # are timed by 0.6.18.post1's (--timer-from), its CUPTI timer flushes L2 itself
      install_fi $V6
      interleaved ${AGREE_S:-400} $V5 --timer-from /tmp/fi-$V6/flashinfer/testing/utils.py ;;
  s6v7) # 0.7.2.post1 with the cuDNN frontend and cupti-python: the GPU test module in its
      # version env, cuDNN's paged decode called directly, then two runs of its sweeps
      v7_env
      with_cupti
      FLASHINFER_WORKSPACE_BASE=$ENVS/$V7/jit timeout ${TESTS_S:-300} \
        $ENVS/$V7/venv/bin/python -m pytest --noconftest -p no:cacheprovider tests/test_gpu.py \
        -q -rs 2>&1 | tee "$OUT/pytest-gpu-$V7.log" | tail -30
      timeout 70 python3 bench/gpu_backends.py --versions $V7 --envs-dir $ENVS \
        --wheelhouse $WHEELHOUSE --out "$OUT" --kernels batch_decode --backends cudnn 2>&1 \
        | tee "$OUT/backends-cudnn-decode-$V7.log" | grep -v "^\["
      runs2 ${SWEEP_S:-160} --versions $V7 --suites ${SUITES:-decode} ;;
  s6v7agree) # the alternation of s6v6 for 0.7.2.post1, in its version env
      v7_env
      with_cupti
      FLASHINFER_WORKSPACE_BASE=$ENVS/$V7/jit PYTHONPATH=/tmp/cupti:. timeout ${AGREE_S:-480} \
        $ENVS/$V7/venv/bin/python bench/gpu_agreement_interleaved.py --cupti \
        --suites decode,prefill,single --out "$OUT/interleaved-$V7.jsonl" 2>&1 \
        | tee "$OUT/interleaved-$V7.log" | tail -12 ;;
  r4) # GPU tests, then the decode sweep again with both configurations of FlashInfer's timer,
      # then the copy-bandwidth calibration the worker stores on its node
      gpu_tests 330
      sweep 170 --versions $V6 --no-torch --suites decode --tag=-r4
      timeout 30 python3 -m kernelwatch.worker.calibrate >"$OUT/calibrate.json" 2>&1 ;;
esac
