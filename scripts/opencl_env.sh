#!/usr/bin/env bash
# Make Intel's CPU OpenCL runtime (the `intel` extra: intel-opencl-rt from PyPI) visible next to PoCL.
#
#   eval "$(bash scripts/opencl_env.sh .venv)"      # then: python -c "import pyopencl as cl; print(cl.get_platforms())"
#   AXONML_DEVICE='Intel(R) OpenCL' python ...     # picks Intel; AXONML_DEVICE=pocl picks PoCL
#
# What it does (idempotent; it only writes when a file's content would change):
#   * writes <venv>/etc/axonml/OpenCL/vendors/intel.icd, one line: the absolute path of <venv>/lib/libintelocl.so.
#     The wheel's own <venv>/etc/OpenCL/vendors/intel-cpu.icd names a conda placeholder path
#     (/opt/anaconda1anaconda2anaconda3/...) that only conda's post-link step rewrites, and its neighbour
#     intel-fpga_emu.icd names a library the wheel does not ship, so that directory is left alone.
#   * prints `export` lines for OCL_ICD_VENDORS (that directory) and LD_LIBRARY_PATH (<venv>/lib first).
#
# PoCL needs no .icd of ours: pyopencl's wheel ships its own ICD loader (ocl-icd) and PoCL in
# site-packages/pyopencl/.libs, and that loader reads pyopencl/.libs/pocl.icd (found through PYOPENCL_HOME,
# which `import pyopencl` sets) in addition to the OCL_ICD_VENDORS directory. A pocl.icd written here too
# would list PoCL twice. Only when pyopencl has no bundled PoCL (a pyopencl built against a system
# loader) and a PoCL library can be found in the venv is a pocl.icd written.
#
# Platform order once both are visible: Intel first (0:0), PoCL second (1:0). Without AXONML_DEVICE the
# library's default rule (the first CPU device) then picks Intel, so name the device you want.
# libintelocl.so finds its own dependencies through its RUNPATH ($ORIGIN); LD_LIBRARY_PATH is exported
# for its dlopen()ed helpers and other loaders (Khronos'), and is harmless to PoCL and Open MPI here.
set -euo pipefail

venv=${1:-${VIRTUAL_ENV:-.venv}}
venv=$(cd "$venv" 2>/dev/null && pwd -P) || { echo "opencl_env.sh: no venv at ${1:-.venv}" >&2; exit 2; }
lib=$venv/lib/libintelocl.so
if [ ! -e "$lib" ]; then
    echo "opencl_env.sh: $lib not found; install the runtime: $venv/bin/python -m pip install -e '.[intel]'" >&2
    exit 3
fi

vendors=$venv/etc/axonml/OpenCL/vendors
mkdir -p "$vendors"

write_icd() {   # write_icd FILE LINE: only when the content differs (keeps mtimes stable)
    if [ "$(cat "$1" 2>/dev/null || true)" != "$2" ]; then
        printf '%s\n' "$2" > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
        echo "opencl_env.sh: wrote $1" >&2
    fi
}

write_icd "$vendors/intel.icd" "$lib"

shopt -s nullglob
bundled=("$venv"/lib/python3*/site-packages/pyopencl/.libs/pocl.icd)
if [ ${#bundled[@]} -eq 0 ]; then
    pocl=("$venv"/lib/libpocl.so* "$venv"/lib/python3*/site-packages/pyopencl/.libs/libpocl*.so)
    if [ ${#pocl[@]} -gt 0 ]; then
        write_icd "$vendors/pocl.icd" "${pocl[0]}"
    else
        echo "opencl_env.sh: no PoCL found in $venv (pip install 'pyopencl[pocl]'); only Intel will be visible" >&2
    fi
else
    rm -f "$vendors/pocl.icd"   # the bundled loader finds PoCL itself; a second entry would duplicate it
fi

printf 'export OCL_ICD_VENDORS=%q\n' "$vendors"
printf 'export LD_LIBRARY_PATH=%q\n' "$venv/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
