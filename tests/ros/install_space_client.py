"""Client half of tests/ros/test_colcon_install.py, run with the install space's environment.

It imports the interfaces the colcon build installed (not the ones of the test's venv, which
may have been built from other definitions), waits for the installed inference node, calls
its services over DDS and prints one JSON line with the answers. Usage: python install_space_client.py NODE_NAME
"""

import json
import sys
import time

import rclpy
from lifecycle_msgs.srv import GetState
from sensor_msgs.msg import Image

import selfsup_perception.srv as srv
from selfsup_perception.srv import LoadModel, SegmentImage


def main(node_name: str) -> dict:
    with rclpy.init():
        node = rclpy.create_node("install_space_client")
        clients = {"state": node.create_client(GetState, f"{node_name}/get_state"),
                   "segment": node.create_client(SegmentImage, "segment_image"),
                   "load": node.create_client(LoadModel, "load_model")}

        def spin_until(predicate, timeout_s):
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.05)
                if predicate():
                    return True
            return False

        if not spin_until(lambda: all(c.service_is_ready() for c in clients.values()), 90):
            return {"error": "services not ready: " + ", ".join(k for k, c in clients.items() if not c.service_is_ready())}

        def call(name, request):
            future = clients[name].call_async(request)
            if not spin_until(future.done, 60):
                raise TimeoutError(f"{name} did not answer")
            return future.result()

        out = {"interfaces_from": srv.__file__}
        spin_until(lambda: call("state", GetState.Request()).current_state.label == "active", 30)
        out["state"] = call("state", GetState.Request()).current_state.label
        image = Image(height=8, width=8, encoding="rgb8", step=24, data=bytes(8 * 8 * 3))
        res = call("segment", SegmentImage.Request(image=image, return_label_image=True))
        out["segment"] = {"success": res.success, "message": res.message, "model_version": res.segmentation.model_version,
                          "label_size": [res.segmentation.label_image.height, res.segmentation.label_image.width]}
        res = call("load", LoadModel.Request(task="descriptors", version=-1))
        out["load"] = {"success": res.success, "message": res.message}
        node.destroy_node()
        return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
