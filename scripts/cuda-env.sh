# Sourced by the scripts that build the `cuda` feature: finds a CUDA toolkit (the system's, or
# PyPI's wheels in a venv when the machine has none), tells candle and cudarc what they cannot
# ask a machine without a GPU, and makes the build link and run there.
#
#   source scripts/cuda-env.sh      (CUDA_VENV=.venv-cuda, CUDA_COMPUTE_CAP: from nvidia-smi or 90)
#
# Linking needs the NVIDIA driver's libcuda, which comes with the driver, not the toolkit. On a
# machine without the driver this builds a stand-in from cudarc's own declarations
# (scripts/cuda_driver_stub.py) whose every call answers "no CUDA device"; it is put on the
# loader's path only there, so on a GPU machine the real driver is always the one loaded.
set -euo pipefail
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_venv=${CUDA_VENV:-$_root/.venv-cuda}

if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
    CUDA_HOME=$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)
elif [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    CUDA_HOME=/usr/local/cuda
elif [ -z "${CUDA_HOME:-}" ]; then
    # Pinned to CUDA 13.0, the oldest 13.x driver we target (the lent H200's driver 580 speaks
    # 13.0): a driver refuses PTX from a newer toolkit (CUDA_ERROR_UNSUPPORTED_PTX_VERSION),
    # and cudarc told a newer API may bind driver functions 13.0 lacks. The marker file makes
    # an older, unpinned venv install again.
    # nvcc's compiler front end (nvvm) and headers (crt) are wheels of their own: unpinned, a
    # newer nvvm writes PTX that 13.0's ptxas refuses ("Unsupported .version").
    _pins=(nvidia-cuda-nvcc==13.0.* nvidia-nvvm==13.0.* nvidia-cuda-crt==13.0.*
        nvidia-cuda-runtime==13.0.* nvidia-cuda-cccl==13.0.* nvidia-cuda-nvrtc==13.0.*
        nvidia-cublas==13.0.* nvidia-curand==10.4.0.*)
    if [ "$(cat "$_venv/.rnnsweep-pins" 2>/dev/null)" != "${_pins[*]}" ]; then
        echo "cuda-env: no CUDA toolkit here; installing PyPI's CUDA 13.0 into $_venv" >&2
        python3 -m venv "$_venv"
        "$_venv/bin/pip" install -q --disable-pip-version-check "${_pins[@]}"
        echo "${_pins[*]}" >"$_venv/.rnnsweep-pins"
    fi
    CUDA_HOME=$(cd "$(echo "$_venv"/lib/python3*/site-packages/nvidia/cu13)" && pwd)
    # The Python whose NVIDIA wheels hold the libraries (scripts/gpu-check.sh run finds them).
    export CUDA_VENV_PYTHON=$_venv/bin/python
    chmod +x "$CUDA_HOME"/bin/* 2>/dev/null || true
fi
export CUDA_HOME CUDA_ROOT=$CUDA_HOME CUDA_PATH=$CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"

# cudarc binds the API of the version it is told; 13.0 is what the drivers we target speak
# (cudarc 0.19 knows up to 13.4 and refuses newer toolkits outright).
_release=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
read -r _major _minor <<<"$_release"
_toolkit_version="$_major.$_minor"
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}

_driver_ok=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    _driver_ok=1
    if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
        CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '.')
    fi
fi
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}   # 90 = H100/H200 when there is no GPU to ask

# The wheels ship only versioned libraries (libcublas.so.13); the linker wants libcublas.so.
_link="$_root/target/cuda-link"
mkdir -p "$_link"
for _dir in "$CUDA_HOME/lib" "$CUDA_HOME/lib64"; do
    [ -d "$_dir" ] || continue
    for _lib in "$_dir"/lib*.so.*; do
        [ -e "$_lib" ] || continue
        _base=$(basename "$_lib")
        _plain=${_base%%.so.*}.so
        [ -e "$_dir/$_plain" ] || ln -sf "$_lib" "$_link/$_plain"
    done
done
export LD_LIBRARY_PATH="$CUDA_HOME/lib:$CUDA_HOME/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [ "$_driver_ok" = 1 ]; then
    _driver=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')
    [ -n "$_driver" ] && ln -sf "$_driver" "$_link/libcuda.so"
    export RNNSWEEP_CUDA_DRIVER=real
else
    # cudarc's declarations of the driver API, at the version Cargo.lock pins (fetched if this
    # machine has not needed the `cuda` build before).
    _version=$(awk '/^name = "cudarc"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' "$_root/Cargo.lock")
    _cudarc=""
    for _attempt in 1 2; do
        for _dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$_version"; do
            [ -d "$_dir" ] && _cudarc=$_dir
        done
        [ -n "$_cudarc" ] && break
        (cd "$_root" && cargo fetch -q)
    done
    [ -n "$_cudarc" ] || { echo "cuda-env: cudarc $_version's sources not found after cargo fetch" >&2; return 1; }
    _stub="$_root/target/cuda-stub"
    mkdir -p "$_stub"
    python3 "$_root/scripts/cuda_driver_stub.py" "$_cudarc/src/driver/sys/mod.rs" > "$_stub/libcuda.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$_stub/libcuda.so.1" "$_stub/libcuda.c"
    ln -sf "$_stub/libcuda.so.1" "$_link/libcuda.so"
    export LD_LIBRARY_PATH="$_stub:$LD_LIBRARY_PATH"
    export RNNSWEEP_CUDA_DRIVER=stub
fi
export LIBRARY_PATH="$_link${LIBRARY_PATH:+:$LIBRARY_PATH}"
echo "cuda-env: toolkit $CUDA_HOME (CUDA $_toolkit_version, cudarc API $CUDARC_CUDA_VERSION), compute capability $CUDA_COMPUTE_CAP, driver: $RNNSWEEP_CUDA_DRIVER" >&2
