"""Checked, not hoped for: every node class uses the shared callback guard and the shared runner."""

import ast
from pathlib import Path

NODES = Path(__file__).resolve().parents[2] / "selfsup_perception" / "nodes"


def test_every_node_class_inherits_the_guard_and_main_uses_run_node():
    files = sorted(p for p in NODES.glob("*_node.py"))
    assert len(files) >= 7
    for path in files:
        tree = ast.parse(path.read_text())
        node_classes = [c for c in tree.body if isinstance(c, ast.ClassDef)
                        and any(getattr(b, "id", "") in ("Node", "LifecycleNode") for b in c.bases)]
        assert node_classes, f"{path.name}: no node class"
        for cls in node_classes:
            bases = [getattr(b, "id", "") for b in cls.bases]
            assert bases[0] == "GuardedNodeMixin", f"{path.name}: {cls.name} must inherit GuardedNodeMixin first"
        main = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "main")
        assert "run_node" in ast.unparse(main), f"{path.name}: main() must use ros.node_runner.run_node"
        for call in ast.walk(tree):  # action servers wrap their callbacks explicitly
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "ActionServer":
                text = ast.unparse(call)
                assert "guard.action_execute" in text and "guard.action_goal" in text, f"{path.name}: {text}"
