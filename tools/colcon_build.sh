#!/usr/bin/env bash
# Build this package with colcon in a workspace, as on a robot, against the ROS 2 wheels of a
# virtual environment instead of /opt/ros/<distro>.
# Usage: colcon_build.sh VENV COLCON WORKSPACE
#   VENV       the project's venv (.venv): ament, rosidl and the message packages come from it
#   COLCON     the colcon executable (make test installs it into .venv-colcon from PyPI)
#   WORKSPACE  the workspace; src/selfsup_perception becomes a link to this source tree, and
#              build/ install/ log/ stay there, so a second build is incremental.
# Nothing is installed into VENV. On a robot: source /opt/ros/<distro>/setup.bash; colcon build.
set -euo pipefail
venv=$(cd "$1" && pwd)
colcon=$2
mkdir -p "$3/src"
ws=$(cd "$3" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
ln -sfn "$src" "$ws/src/selfsup_perception"
touch "$ws/COLCON_IGNORE"  # when the workspace lies inside the source tree, colcon must not find it
export PATH="$venv/bin:$PATH" CMAKE_PREFIX_PATH="$venv" AMENT_PREFIX_PATH="$venv"
cd "$ws"
"$colcon" --log-base "$ws/log" build --base-paths src --build-base "$ws/build" --install-base "$ws/install" \
  --event-handlers console_direct- --cmake-args -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
  -DPython3_EXECUTABLE="$venv/bin/python" -DPython3_FIND_VIRTUALENV=ONLY
