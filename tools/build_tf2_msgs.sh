#!/usr/bin/env bash
# Build tf2_msgs (tools/tf2_msgs: the message definitions of ros2/geometry2) against the ROS 2
# wheels of a virtual environment and install it into PREFIX (default: the venv itself), with
# the same rosidl toolchain as this package's interfaces (tools/build_interfaces.sh).
# Nothing happens when tf2_msgs is importable already (a ROS 2 install, or a wheel).
# Usage: build_tf2_msgs.sh VENV BUILD_DIR [PREFIX]
set -euo pipefail
venv=$(cd "$1" && pwd)
build=$2
prefix=${3:-$venv}
src=$(cd "$(dirname "$0")/tf2_msgs" && pwd)
if [ "$prefix" = "$venv" ] && "$venv/bin/python" -c "import tf2_msgs.msg" 2>/dev/null; then
  echo "tf2_msgs is importable already"; exit 0
fi
mkdir -p "$build" "$prefix"
log="$build/build.log"
export PATH="$venv/bin:$PATH"
export CMAKE_PREFIX_PATH="$venv" AMENT_PREFIX_PATH="$venv"
if ! {
  cmake -S "$src" -B "$build" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DCMAKE_PREFIX_PATH="$venv" -DPython3_EXECUTABLE="$venv/bin/python" -DPython3_FIND_VIRTUALENV=ONLY &&
  cmake --build "$build" -j "$(nproc)" &&
  cmake --install "$build"
} >"$log" 2>&1; then
  echo "tf2_msgs build failed; the end of $log:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib', vars={'base': '$prefix', 'platbase': '$prefix'}))")
PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  "$venv/bin/python" -c "from tf2_msgs.msg import TFMessage; from tf2_msgs.srv import LookupTransform; TFMessage()" \
  || { echo "tf2_msgs was built but does not import from $prefix; see $log" >&2; exit 1; }
echo "tf2_msgs installed into $prefix"
