#!/usr/bin/env bash
# Build this package's ROS interfaces (msg/, srv/, action/) against the ROS 2 wheels in a
# virtual environment and install them into it. Usage: build_interfaces.sh VENV BUILD_DIR
# On a ROS 2 workspace use `colcon build` instead: the same CMakeLists.txt builds everything.
set -euo pipefail
venv=$(cd "$1" && pwd)
build=$2
src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$build"
log="$build/build.log"
export PATH="$venv/bin:$PATH"
export CMAKE_PREFIX_PATH="$venv" AMENT_PREFIX_PATH="$venv"
if ! {
  cmake -S "$src" -B "$build" -DSELFSUP_INTERFACES_ONLY=ON -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_PREFIX_PATH="$venv" \
    -DPython3_EXECUTABLE="$venv/bin/python" -DPython3_FIND_VIRTUALENV=ONLY &&
  cmake --build "$build" -j "$(nproc)" &&
  cmake --install "$build"
} >"$log" 2>&1; then
  echo "interface build failed; the end of $log:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
# Check that rclpy can import the generated types.
"$venv/bin/python" -c "import sys; sys.path.insert(0, '$src'); from selfsup_perception.msg import InteractionSample; from selfsup_perception.srv import CaptureView; from selfsup_perception.action import ExecuteInteraction" \
  || { echo "the interfaces were built but do not import; see $log" >&2; exit 1; }
echo "interfaces installed into $venv"
