#!/usr/bin/env bash
# Build a TensorRT engine (FP16 by default) from an ONNX model with trtexec, on the device
# that will run it, and write the JSON sidecar segcam checks before loading the engine.
#
#   build_engine.sh MODEL.onnx [--profile NAME|FILE.yaml] [options] [-- extra trtexec args]
#
# Works with TensorRT 8.5 (JetPack 5.1) and 10.x (JetPack 6). Run with --help for options.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: build_engine.sh MODEL.onnx [options] [-- extra trtexec arguments]

Builds <out-dir>/<model>.<precision>.trt<major.minor>.sm<SM>.engine with trtexec and its
sidecar <engine>.json (TensorRT version, GPU, ONNX sha256, I/O, flags, build time).
Input shapes come from the model profile; a persistent timing cache in the engine
directory makes rebuilds faster. Engine builds take minutes on a Jetson.

options:
  --profile NAME|FILE   model profile (configs/models/NAME.yaml or a YAML path);
                        default: the ONNX file name without .onnx
  --precision P         fp16 (default) or fp32
  --workspace MiB       builder workspace pool (default 1024): --memPoolSize=workspace:MiB
  --out-dir DIR         engine directory (default: engines)
  --output FILE         engine path (default: canonical name inside --out-dir)
  --timing-cache FILE   timing cache (default: <out-dir>/trt<ver>.sm<SM>.timing.cache)
  --dla-core N          put layers on DLA core N, with GPU fallback (Xavier, Orin AGX/NX)
  --io-fp16             float16 engine inputs/outputs (the GPU pipeline writes fp16)
  --min-shape S, --opt-shape S, --max-shape S
                        shapes (e.g. 1x3x512x512) for an ONNX with dynamic input axes;
                        default: the profile's width/height for all three
  --max-batch N         for an ONNX with a dynamic batch axis (segcam model convert
                        --dynamic-batch): optimisation profile min 1, opt and max N
                        frames, so one engine serves the batched inference of N streams
  --trtexec PATH        trtexec to use (default: $TRTEXEC, /usr/src/tensorrt/bin/trtexec,
                        then trtexec on PATH)
  --trt-version X.Y.Z   do not detect the TensorRT version, use this one (for --dry-run on
                        a machine without TensorRT, and tests; also $SEGCAM_TRT_VERSION)
  --sm NN               GPU compute capability, e.g. 87 (default: detected from the
                        Jetson device tree, nvidia-smi, or CUDA via segcam)
  --dry-run             print the exact trtexec command and exit
  -v, --verbose         pass --verbose to trtexec and show its whole log
  -h, --help            this help

environment: TRTEXEC, SEGCAM_TRT_VERSION (as --trt-version), SEGCAM_PYTHON (the Python
that has segcam installed; default: segcam on PATH, else python3 -m segcam)
EOF
}

die() {
  echo "build_engine.sh: error: $*" >&2
  exit 2
}

note() {
  echo "build_engine.sh: $*" >&2
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ------------------------------------------------------------------------- arguments
onnx=""
profile=""
precision="fp16"
workspace="1024"
out_dir="engines"
output=""
timing_cache=""
dla_core=""
io_fp16=0
min_shape=""
opt_shape=""
max_shape=""
max_batch="1"
trtexec="${TRTEXEC:-}"
trt_version="${SEGCAM_TRT_VERSION:-}"
sm=""
dry_run=0
verbose=0
extra=()

need_value() {
  if [ "$#" -lt 2 ] || [ -z "$2" ]; then
    die "$1 needs a value (see --help)"
  fi
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --profile) need_value "$@"; profile="$2"; shift 2 ;;
    --precision) need_value "$@"; precision="$2"; shift 2 ;;
    --workspace) need_value "$@"; workspace="$2"; shift 2 ;;
    --out-dir) need_value "$@"; out_dir="$2"; shift 2 ;;
    --output) need_value "$@"; output="$2"; shift 2 ;;
    --timing-cache) need_value "$@"; timing_cache="$2"; shift 2 ;;
    --dla-core) need_value "$@"; dla_core="$2"; shift 2 ;;
    --io-fp16) io_fp16=1; shift ;;
    --min-shape) need_value "$@"; min_shape="$2"; shift 2 ;;
    --opt-shape) need_value "$@"; opt_shape="$2"; shift 2 ;;
    --max-shape) need_value "$@"; max_shape="$2"; shift 2 ;;
    --max-batch) need_value "$@"; max_batch="$2"; shift 2 ;;
    --trtexec) need_value "$@"; trtexec="$2"; shift 2 ;;
    --trt-version) need_value "$@"; trt_version="$2"; shift 2 ;;
    --sm) need_value "$@"; sm="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -v | --verbose) verbose=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
      [ -z "$onnx" ] || die "only one model, got '$onnx' and '$1'"
      onnx="$1"; shift ;;
  esac
done

[ -n "$onnx" ] || { usage >&2; exit 2; }
[ -f "$onnx" ] || die "no ONNX model at $onnx"
case "$precision" in fp16 | fp32) ;; *) die "--precision must be fp16 or fp32, got $precision" ;; esac
case "$workspace" in '' | *[!0-9]*) die "--workspace takes MiB as a whole number, got $workspace" ;; esac
if [ -n "$dla_core" ]; then
  case "$dla_core" in *[!0-9]*) die "--dla-core takes a core number, got $dla_core" ;; esac
fi
if [ -z "$profile" ]; then
  profile="$(basename "$onnx")"
  profile="${profile%.onnx}"
fi

# ------------------------------------------------------------------------- segcam helper
# The profile, shapes and sidecar are handled by segcam itself (one implementation).
segcam_cli() {
  if [ -n "${SEGCAM_PYTHON:-}" ]; then
    "$SEGCAM_PYTHON" -m segcam "$@"
  elif [ -x "$here/python3" ] && "$here/python3" -c 'import segcam.cli' >/dev/null 2>&1; then
    "$here/python3" -m segcam "$@" # installed into a venv: the venv's python sits beside us
  elif command -v segcam >/dev/null 2>&1; then
    segcam "$@"
  elif python3 -c 'import segcam.cli' >/dev/null 2>&1; then
    python3 -m segcam "$@"
  elif [ -d "$here/app" ]; then
    die "segcam is not installed: in this checkout run pip install -e . (the folder app/ installs as the package segcam), or set SEGCAM_PYTHON"
  else
    die "segcam is not installed (pip install segcam, or set SEGCAM_PYTHON)"
  fi
}

# ------------------------------------------------------------------------- trtexec + version
if [ -z "$trtexec" ]; then
  if [ -x /usr/src/tensorrt/bin/trtexec ]; then
    trtexec=/usr/src/tensorrt/bin/trtexec
  elif command -v trtexec >/dev/null 2>&1; then
    trtexec="$(command -v trtexec)"
  fi
fi
if [ -z "$trtexec" ] || [ ! -x "$trtexec" ]; then
  if [ "$dry_run" -eq 1 ]; then
    [ -n "$trtexec" ] || trtexec=/usr/src/tensorrt/bin/trtexec
    note "trtexec not found here; printing the command for $trtexec"
  else
    die "trtexec not found (looked at \$TRTEXEC, /usr/src/tensorrt/bin/trtexec and PATH).
  On JetPack it ships with TensorRT: sudo apt install tensorrt (or libnvinfer-bin),
  then rerun; or pass --trtexec PATH. Without trtexec: segcam engine build."
  fi
fi

# trtexec's banner carries NV_TENSORRT_VERSION: 8502 for 8.5.2 (major*1000 + minor*100 +
# patch) and 100300 for 10.3.0 (major*10000 + minor*100 + patch).
version_from_banner() {
  local n
  n="$("$trtexec" --help 2>&1 | sed -n 's/.*\[TensorRT v\([0-9][0-9]*\)\].*/\1/p' | head -n 1)" || true
  [ -n "$n" ] || return 1
  if [ "$n" -ge 100000 ]; then
    echo "$((n / 10000)).$((n / 100 % 100)).$((n % 100))"
  else
    echo "$((n / 1000)).$((n / 100 % 10)).$((n % 100))"
  fi
}

version_from_packages() {
  local v pkg
  command -v dpkg-query >/dev/null 2>&1 || return 1
  for pkg in libnvinfer-bin libnvinfer10 libnvinfer8 tensorrt; do
    v="$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null)" || continue
    [ -n "$v" ] && { echo "${v%%-*}"; return 0; }
  done
  return 1
}

if [ -z "$trt_version" ] && [ -x "$trtexec" ]; then
  trt_version="$(version_from_banner)" || trt_version=""
fi
if [ -z "$trt_version" ]; then
  trt_version="$(version_from_packages)" || trt_version=""
fi
if [ -z "$trt_version" ]; then
  trt_version="$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null)" || trt_version=""
fi
[ -n "$trt_version" ] || die "cannot tell the TensorRT version (no trtexec banner, package or
  Python module); pass --trt-version X.Y.Z"
trt_major="${trt_version%%.*}"
trt_rest="${trt_version#*.}"
trt_minor="${trt_rest%%.*}"
case "$trt_major$trt_minor" in '' | *[!0-9]*) die "cannot read TensorRT version '$trt_version'" ;; esac
if [ "$trt_major" -lt 8 ] || { [ "$trt_major" -eq 8 ] && [ "$trt_minor" -lt 5 ]; }; then
  die "TensorRT $trt_version is too old: segcam needs 8.5 or newer (JetPack 5.1+)"
fi

# ------------------------------------------------------------------------- GPU SM
# Without --sm: the Jetson's SoC from the device tree (no CUDA bindings needed), else
# nvidia-smi on a PC; failing both, segcam asks CUDA itself (needs segcam[gpu]).
detect_sm() {
  local compat cap
  if [ -r /proc/device-tree/compatible ]; then
    compat="$(tr '\0' ' ' </proc/device-tree/compatible)"
    case "$compat" in
      *nvidia,tegra234*) echo 87; return 0 ;; # Orin
      *nvidia,tegra194*) echo 72; return 0 ;; # Xavier
    esac
  fi
  if command -v nvidia-smi >/dev/null 2>&1; then
    cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1)" || cap=""
    case "$cap" in [0-9]*.[0-9]*) echo "${cap/./}"; return 0 ;; esac
  fi
  return 1
}
[ -n "$sm" ] || sm="$(detect_sm)" || sm=""

# ------------------------------------------------------------------------- plan
plan_args=(engine plan "$onnx" --profile "$profile" --precision "$precision" --trt-version "$trt_version")
[ -z "$sm" ] || plan_args+=(--sm "$sm")
[ -z "$min_shape" ] || plan_args+=(--min-shape "$min_shape")
[ -z "$opt_shape" ] || plan_args+=(--opt-shape "$opt_shape")
[ -z "$max_shape" ] || plan_args+=(--max-shape "$max_shape")
case "$max_batch" in
  '' | *[!0-9]* | 0) die "--max-batch needs a whole number of frames of 1 or more, got '$max_batch'" ;;
esac
[ "$max_batch" = "1" ] || plan_args+=(--max-batch "$max_batch")
plan="$(segcam_cli "${plan_args[@]}")" || die "cannot plan the build (see the error above)"

model="" dynamic=0 min_spec="" opt_spec="" max_spec="" engine_name=""
while IFS='=' read -r key value; do
  case "$key" in
    MODEL) model="$value" ;;
    DYNAMIC) dynamic="$value" ;;
    MIN_SHAPE) min_spec="$value" ;;
    OPT_SHAPE) opt_spec="$value" ;;
    MAX_SHAPE) max_spec="$value" ;;
    SM) sm="$value" ;;
    ENGINE_NAME) engine_name="$value" ;;
  esac
done <<<"$plan"
[ -n "$engine_name" ] || die "segcam engine plan gave no engine name"

engine="${output:-$out_dir/$engine_name}"
[ -n "$timing_cache" ] || timing_cache="$(dirname "$engine")/trt${trt_major}.${trt_minor}.sm${sm}.timing.cache"
partial="$engine.partial"

# ------------------------------------------------------------------------- command
cmd=("$trtexec" "--onnx=$onnx" "--saveEngine=$partial")
flags=()
if [ "$precision" = "fp16" ]; then
  cmd+=(--fp16)
  flags+=(fp16)
fi
if [ "$dynamic" = "1" ]; then
  # Only for dynamic inputs: trtexec refuses explicit shapes for a static model.
  cmd+=("--minShapes=$min_spec" "--optShapes=$opt_spec" "--maxShapes=$max_spec")
  flags+=("shapes=$min_spec/$opt_spec/$max_spec")
fi
# --memPoolSize takes MiB without a suffix on 8.5 and 10.x (--workspace is deprecated).
cmd+=("--memPoolSize=workspace:$workspace" "--timingCacheFile=$timing_cache")
flags+=("workspace=${workspace}MiB" timing_cache)
if [ "$io_fp16" -eq 1 ]; then
  cmd+=(--inputIOFormats=fp16:chw --outputIOFormats=fp16:chw)
  flags+=(io=fp16)
fi
if [ -n "$dla_core" ]; then
  cmd+=("--useDLACore=$dla_core" --allowGPUFallback)
  flags+=("dla=$dla_core" gpu_fallback)
fi
# Build only: --skipInference from 8.6 on; 8.5 has only --buildOnly.
if [ "$trt_major" -gt 8 ] || [ "$trt_minor" -ge 6 ]; then
  cmd+=(--skipInference)
else
  cmd+=(--buildOnly)
fi
[ "$verbose" -eq 0 ] || cmd+=(--verbose)
[ "${#extra[@]}" -eq 0 ] || cmd+=("${extra[@]}")

if [ "$dry_run" -eq 1 ]; then
  note "TensorRT $trt_version, SM $sm, model $model -> $engine"
  line=""
  for arg in "${cmd[@]}"; do
    line+="$(printf '%q' "$arg") "
  done
  echo "${line% }"
  exit 0
fi

# ------------------------------------------------------------------------- build
mkdir -p "$(dirname "$engine")" "$(dirname "$timing_cache")"
log_file="$engine.build.log"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -f "$partial"
}
trap 'cleanup; note "interrupted"; exit 130' INT TERM

explain() {
  local rc="$1"
  if [ "$rc" -gt 128 ]; then
    note "trtexec was killed (signal $((rc - 128))): out of host memory? On a Jetson add swap"
    note "or stop other apps (the segcam service, a desktop session) and rebuild."
  fi
  if grep -qiE "No importer registered for op|getPluginCreator could not find plugin|UNSUPPORTED_NODE|Unsupported ONNX data type" "$log_file"; then
    note "the ONNX uses an operator TensorRT $trt_version cannot import (named in the log above)."
    note "Re-export with another opset or replace the op (docs/byom.md: BiRefNet's deform_conv2d),"
    note "or run this model with ONNX Runtime (--set inference.backend=onnxruntime)."
  fi
  if grep -qiE "out of memory|OutOfMemory|Requested amount of GPU memory|cudaErrorMemoryAllocation|insufficient memory" "$log_file"; then
    note "GPU memory ran out: lower --workspace (now $workspace MiB), stop other GPU users, or use"
    note "a smaller input size in the profile."
  fi
  if grep -qiE "Cannot find input tensor|not found in the network|Invalid tensor name" "$log_file"; then
    note "a shape names an input the model lacks: check input_name in profile $profile."
  fi
  if grep -qiE "Unknown option|Unknown arguments|invalid argument" "$log_file"; then
    note "this trtexec rejected an option: is it really TensorRT $trt_version? Pass --trt-version."
  fi
  if grep -qi "timing cache" "$log_file" && grep -qiE "mismatch|incompatible|corrupt" "$log_file"; then
    note "the timing cache $timing_cache is from another TensorRT or GPU: delete it and rebuild."
  fi
  if [ -n "$dla_core" ] && grep -qi "DLA" "$log_file"; then
    note "DLA could not take (part of) the network: try without --dla-core."
  fi
  note "full log: $log_file"
}

note "TensorRT $trt_version, SM $sm: building $engine (FP16=$([ "$precision" = fp16 ] && echo yes || echo no)); this takes minutes"
note "command: ${cmd[*]}"
start=$(date +%s)
"${cmd[@]}" >"$log_file" 2>&1 &
pid=$!
last_report=$start
while kill -0 "$pid" 2>/dev/null; do
  sleep 1
  now=$(date +%s)
  if [ "$verbose" -eq 1 ] || [ $((now - last_report)) -ge 15 ]; then
    last_report=$now
    latest="$(grep -E '\[(I|W|E)\]' "$log_file" | tail -n 1 | cut -c1-150)" || latest=""
    note "[$((now - start)) s] building... ${latest}"
  fi
done
set +e
wait "$pid"
rc=$?
set -e
pid=""
elapsed=$(($(date +%s) - start))
if [ "$rc" -ne 0 ] || [ ! -s "$partial" ]; then
  [ "$rc" -ne 0 ] || rc=1
  tail -n 25 "$log_file" >&2
  note "trtexec failed after ${elapsed} s (exit $rc)"
  explain "$rc"
  rm -f "$partial"
  exit "$rc"
fi
mv -f "$partial" "$engine"

side_args=(engine sidecar "$engine" --onnx "$onnx" --profile "$profile" --precision "$precision"
  --trt-version "$trt_version" --sm "$sm" --flags "${flags[*]}" --build-seconds "$elapsed"
  --workspace-mib "$workspace" --dla-core "${dla_core:--1}")
if [ "$dynamic" = "1" ]; then
  side_args+=(--min-shape "${min_spec##*:}" --opt-shape "${opt_spec##*:}" --max-shape "${max_spec##*:}")
fi
if ! segcam_cli "${side_args[@]}" >/dev/null; then
  note "engine built but its sidecar could not be written: segcam will refuse the engine"
  exit 1
fi
size_kib=$(($(wc -c <"$engine") / 1024))
note "done in ${elapsed} s: $engine (${size_kib} KiB) + $(basename "$engine").json; log: $log_file"
echo "$engine"
